#ifndef CHATBATCH_CLIBPQ_SHIM_H
#define CHATBATCH_CLIBPQ_SHIM_H
#include <libpq-fe.h>
#endif
