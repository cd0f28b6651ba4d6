#ifndef MOUNTSUP_CMOUNTWORKERKITSUPPORT_H
#define MOUNTSUP_CMOUNTWORKERKITSUPPORT_H
// C helpers for MountWorkerKit: what Swift cannot call directly (macros,
// _GNU_SOURCE-only declarations, va_list callbacks). libfuse types stay out of
// this header so that the CFuse3 module remains their only owner; requests are
// passed as the opaque `struct fuse_req *` that Swift sees as `OpaquePointer`.
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/xattr.h>

struct fuse_req;

// Linux ABI constants that Glibc only declares under _GNU_SOURCE.
// support.c checks each value against the system headers at compile time.
#define MWK_O_PATH 010000000
#define MWK_AT_EMPTY_PATH 0x1000
#if defined(__aarch64__) || defined(__arm__)
#define MWK_O_DIRECT 0200000
#else
#define MWK_O_DIRECT 040000
#endif
#define MWK_RENAME_NOREPLACE 1
#define MWK_RENAME_EXCHANGE 2
#define MWK_RENAME_WHITEOUT 4
#define MWK_UTIME_NOW 1073741823L
#define MWK_UTIME_OMIT 1073741822L

int mwk_renameat2(int olddirfd, const char *oldpath, int newdirfd,
                  const char *newpath, unsigned int flags);
int mwk_fallocate(int fd, int mode, int64_t offset, int64_t length);
ssize_t mwk_copy_file_range(int fd_in, int64_t offset_in, int fd_out,
                            int64_t offset_out, size_t length,
                            unsigned int flags);

/// The statfs(2) type magic of the filesystem holding `fd` (O_PATH is fine),
/// or -1 with errno set.
int64_t mwk_filesystem_type(int fd);

/// Replies to a read request with up to `size` bytes of `fd` at `offset`.
/// libfuse moves them with splice(2) when the connection wants
/// FUSE_CAP_SPLICE_WRITE, and with one pread into a buffer otherwise.
int mwk_reply_fd_data(struct fuse_req *req, int fd, int64_t offset,
                      size_t size);

/// Routes libfuse's log through a handler that writes to stderr, as libfuse
/// does by default, and remembers the last error-level message.
void mwk_capture_fuse_log(void);

/// Copies the last error-level libfuse message (without its trailing newline)
/// into `buffer` and returns its length; 0 when there was none.
size_t mwk_last_fuse_error(char *buffer, size_t capacity);

/// Forgets the remembered libfuse error message.
void mwk_clear_fuse_error(void);

#endif
