#ifndef MOUNTSUP_CFUSE3_SHIM_H
#define MOUNTSUP_CFUSE3_SHIM_H
// The low-level API at the level Debian 12's libfuse 3.14 provides.
#define FUSE_USE_VERSION 314
#include <fuse3/fuse_lowlevel.h>
#include <fuse3/fuse_opt.h>
#endif
