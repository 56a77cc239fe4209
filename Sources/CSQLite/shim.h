#ifndef CHATBATCH_CSQLITE_SHIM_H
#define CHATBATCH_CSQLITE_SHIM_H
#include <sqlite3.h>
#endif
