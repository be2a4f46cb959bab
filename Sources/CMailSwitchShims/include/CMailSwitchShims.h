#ifndef MAILSWITCH_SHIMS_H
#define MAILSWITCH_SHIMS_H

#include <stddef.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <ldap.h>

/* Linux calls Glibc only declares under _GNU_SOURCE; defined in the .c so the
   feature macro never leaks into Swift's view of the C headers. */
int mailswitch_accept4(int fd, struct sockaddr *addr, socklen_t *len);
int mailswitch_pipe2(int fds[2]);
ssize_t mailswitch_splice(int fd_in, int fd_out, size_t len);
int mailswitch_set_pipe_size(int fd, int size);

/* libldap: LDAP_OPT_ON is a macro over a pointer; the result tags import with
   mismatched types. */
int mailswitch_ldap_set_on(LDAP *ld, int option);
int mailswitch_ldap_set_off(LDAP *ld, int option);
int mailswitch_ldap_set_int(LDAP *ld, int option, int value);
int mailswitch_ldap_set_timeout(LDAP *ld, int option, long seconds, long microseconds);
int mailswitch_ldap_get_fd(LDAP *ld);
int mailswitch_ldap_simple_bind_s(LDAP *ld, const char *dn, const char *password, size_t password_len);

#endif
