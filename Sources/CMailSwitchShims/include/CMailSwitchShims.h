#ifndef MAILSWITCH_SHIMS_H
#define MAILSWITCH_SHIMS_H

#include <stddef.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <ldap.h>
#include <openssl/ssl.h>

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

/* OpenSSL: function-like macros and SSL_OP_* bits Swift cannot import. */
void mailswitch_ssl_ctx_configure(SSL_CTX *ctx, int min_tls13);
long mailswitch_ssl_set_host_name(SSL *ssl, const char *name);
int mailswitch_ssl_is_session_reused(SSL *ssl);

/* SNI: on a ClientHello naming a host, switch to the first alternate context whose
   certificate covers it; otherwise stay on the default. The table is owned by the caller,
   who keeps it alive while any connection may still be handshaking. */
typedef struct mailswitch_sni_table mailswitch_sni_table;
mailswitch_sni_table *mailswitch_sni_table_new(SSL_CTX **alternates, int count);
void mailswitch_sni_table_free(mailswitch_sni_table *table);
void mailswitch_ssl_ctx_set_sni(SSL_CTX *ctx, mailswitch_sni_table *table);

/* ALPN: select "imap" (protocol 0) or "pop3" (protocol 1) when the client offers it; go on
   without ALPN when it does not (mail clients predating ALPN are the norm). */
void mailswitch_ssl_ctx_accept_alpn(SSL_CTX *ctx, int protocol);

#endif
