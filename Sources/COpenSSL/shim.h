#ifndef MAILSWITCH_COPENSSL_H
#define MAILSWITCH_COPENSSL_H
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#endif
