#define _GNU_SOURCE
#include <fcntl.h>
#include <unistd.h>
#include <string.h>
#include <sys/time.h>
#include "CMailSwitchShims.h"

int mailswitch_accept4(int fd, struct sockaddr *addr, socklen_t *len) {
    return accept4(fd, addr, len, SOCK_NONBLOCK | SOCK_CLOEXEC);
}

int mailswitch_pipe2(int fds[2]) {
    return pipe2(fds, O_NONBLOCK | O_CLOEXEC);
}

ssize_t mailswitch_splice(int fd_in, int fd_out, size_t len) {
    return splice(fd_in, NULL, fd_out, NULL, len, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
}

int mailswitch_set_pipe_size(int fd, int size) {
    return fcntl(fd, F_SETPIPE_SZ, size);
}

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
