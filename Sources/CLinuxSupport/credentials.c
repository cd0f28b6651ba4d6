#define _GNU_SOURCE
#include "CLinuxSupport.h"

#include <sys/syscall.h>
#include <unistd.h>

// The raw system calls change only the calling thread; glibc's wrappers would change every
// thread of the process (the supervisor's event loop among them).
int mountsup_thread_assume_ids(uid_t uid, gid_t gid) {
  if (syscall(SYS_setgroups, 1, &gid) != 0) return -1;
  if (syscall(SYS_setresgid, gid, gid, gid) != 0) return -1;
  if (syscall(SYS_setresuid, uid, uid, uid) != 0) return -1;
  return 0;
}
