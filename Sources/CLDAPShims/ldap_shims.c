#include <sys/time.h>
#include "CLDAPShims.h"

int mailswitch_ldap_set_on(LDAP *ld, int option) {
    return ldap_set_option(ld, option, LDAP_OPT_ON);
}

int mailswitch_ldap_set_off(LDAP *ld, int option) {
    return ldap_set_option(ld, option, LDAP_OPT_OFF);
}

int mailswitch_ldap_set_int(LDAP *ld, int option, int value) {
    return ldap_set_option(ld, option, &value);
}

int mailswitch_ldap_set_timeout(LDAP *ld, int option, long seconds, long microseconds) {
    struct timeval tv = { .tv_sec = seconds, .tv_usec = microseconds };
    return ldap_set_option(ld, option, &tv);
}

int mailswitch_ldap_get_fd(LDAP *ld) {
    int fd = -1;
    if (ldap_get_option(ld, LDAP_OPT_DESC, &fd) != LDAP_OPT_SUCCESS) return -1;
    return fd;
}

int mailswitch_ldap_simple_bind_s(LDAP *ld, const char *dn, const char *password, size_t password_len) {
    struct berval cred = { .bv_len = password_len, .bv_val = (char *)password };
    return ldap_sasl_bind_s(ld, dn, LDAP_SASL_SIMPLE, &cred, NULL, NULL, NULL);
}
