#ifndef CONVERGIO_CORE_H
#define CONVERGIO_CORE_H
int cv_abi_version(void);
#endif
