#ifndef MAILSWITCH_OPENSSL_SHIMS_H
#define MAILSWITCH_OPENSSL_SHIMS_H

#include <openssl/ssl.h>

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
/* Accepts the one protocol named by `wire` (ALPN's wire form: length byte, name), which must
   outlive the context. */
void mailswitch_ssl_ctx_accept_alpn(SSL_CTX *ctx, const unsigned char *wire);

#endif
