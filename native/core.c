#include "convergio_core.h"

int cv_abi_version(void) { return CV_ABI_VERSION; }
