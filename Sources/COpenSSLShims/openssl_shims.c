#include <stdlib.h>
#include <openssl/x509v3.h>
#include "COpenSSLShims.h"

void mailswitch_ssl_ctx_configure(SSL_CTX *ctx, int min_tls13) {
    SSL_CTX_set_min_proto_version(ctx, min_tls13 ? TLS1_3_VERSION : TLS1_2_VERSION);
    /* Partial writes and a buffer that moves between retries: the relay retries a refused
       write from its own copy. Idle sessions give their read/write buffers back. */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER
                          | SSL_MODE_RELEASE_BUFFERS);
    /* A peer closing TCP without close_notify is an ordinary end for a mail session;
       renegotiation would let a read want a write in the middle of the relay. */
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_RENEGOTIATION
                             | SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE);
}

long mailswitch_ssl_set_host_name(SSL *ssl, const char *name) {
    return SSL_set_tlsext_host_name(ssl, name);
}

int mailswitch_ssl_is_session_reused(SSL *ssl) {
    return SSL_session_reused(ssl);
}

struct mailswitch_sni_table {
    int count;
    SSL_CTX **contexts;
};

mailswitch_sni_table *mailswitch_sni_table_new(SSL_CTX **alternates, int count) {
    mailswitch_sni_table *table = calloc(1, sizeof *table);
    if (!table) return NULL;
    table->contexts = calloc(count > 0 ? count : 1, sizeof(SSL_CTX *));
    if (!table->contexts) { free(table); return NULL; }
    for (int i = 0; i < count; i++) {
        SSL_CTX_up_ref(alternates[i]);
        table->contexts[i] = alternates[i];
    }
    table->count = count;
    return table;
}

void mailswitch_sni_table_free(mailswitch_sni_table *table) {
    if (!table) return;
    for (int i = 0; i < table->count; i++) SSL_CTX_free(table->contexts[i]);
    free(table->contexts);
    free(table);
}

static int sni_callback(SSL *ssl, int *alert, void *arg) {
    (void)alert;
    const mailswitch_sni_table *table = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (!name || !table) return SSL_TLSEXT_ERR_OK;
    for (int i = 0; i < table->count; i++) {
        X509 *cert = SSL_CTX_get0_certificate(table->contexts[i]);
        if (cert && X509_check_host(cert, name, 0, 0, NULL) == 1) {
            SSL_set_SSL_CTX(ssl, table->contexts[i]);
            break;
        }
    }
    return SSL_TLSEXT_ERR_OK;
}

void mailswitch_ssl_ctx_set_sni(SSL_CTX *ctx, mailswitch_sni_table *table) {
    SSL_CTX_set_tlsext_servername_callback(ctx, sni_callback);
    SSL_CTX_set_tlsext_servername_arg(ctx, table);
}

/* The protocol's name in ALPN's wire form: a length byte, then the name. */
static int alpn_callback(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                         const unsigned char *in, unsigned int inlen, void *arg) {
    (void)ssl;
    const unsigned char *ours = arg;
    unsigned char *selected = NULL;
    if (SSL_select_next_proto(&selected, outlen, ours, 1u + ours[0], in, inlen) == OPENSSL_NPN_NEGOTIATED) {
        *out = selected;
        return SSL_TLSEXT_ERR_OK;
    }
    return SSL_TLSEXT_ERR_NOACK;
}

void mailswitch_ssl_ctx_accept_alpn(SSL_CTX *ctx, const unsigned char *wire) {
    SSL_CTX_set_alpn_select_cb(ctx, alpn_callback, (void *)wire);
}
