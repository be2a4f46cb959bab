#ifndef MAILSWITCH_CURL_SHIMS_H
#define MAILSWITCH_CURL_SHIMS_H

#include <curl/curl.h>

/* libcurl: curl_easy_setopt and curl_easy_getinfo are variadic, which Swift cannot call.
   One typed wrapper per kind of argument mailswitch passes. */
CURLcode mailswitch_curl_setopt_long(CURL *handle, CURLoption option, long value);
/* libcurl copies strings it is given (since 7.17.0); the caller's may go at once. */
CURLcode mailswitch_curl_setopt_string(CURL *handle, CURLoption option, const char *value);
/* Not copied: the pointee must outlive every transfer that uses it. */
CURLcode mailswitch_curl_setopt_pointer(CURL *handle, CURLoption option, const void *value);
CURLcode mailswitch_curl_setopt_writefunction(CURL *handle, curl_write_callback callback);
CURLcode mailswitch_curl_getinfo_long(CURL *handle, CURLINFO info, long *value);

#endif
