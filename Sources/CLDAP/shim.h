#ifndef MAILSWITCH_CLDAP_H
#define MAILSWITCH_CLDAP_H
#include <lber.h>
#include <ldap.h>
#endif
