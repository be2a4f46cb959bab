#ifndef MAILSWITCH_CCURL_H
#define MAILSWITCH_CCURL_H
#include <curl/curl.h>
#endif
