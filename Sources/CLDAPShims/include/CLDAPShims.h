#ifndef MAILSWITCH_LDAP_SHIMS_H
#define MAILSWITCH_LDAP_SHIMS_H

#include <stddef.h>
#include <ldap.h>

/* libldap: LDAP_OPT_ON is a macro over a pointer; the result tags import with
   mismatched types. */
int mailswitch_ldap_set_on(LDAP *ld, int option);
int mailswitch_ldap_set_off(LDAP *ld, int option);
int mailswitch_ldap_set_int(LDAP *ld, int option, int value);
int mailswitch_ldap_set_timeout(LDAP *ld, int option, long seconds, long microseconds);
int mailswitch_ldap_get_fd(LDAP *ld);
int mailswitch_ldap_simple_bind_s(LDAP *ld, const char *dn, const char *password, size_t password_len);

#endif
