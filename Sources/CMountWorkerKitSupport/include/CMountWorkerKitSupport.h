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
struct fuse_session;
struct fuse_file_info;
struct fuse_entry_param;

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

// MARK: Handing the connection over and resuming it (connection.c)

/// The largest FUSE_INIT request kept (header and the kernel's fuse_init_in).
#define MWK_INIT_REQUEST_MAX 256
/// FUSE_NOTIFY_RESEND (protocol 7.40), missing from Debian 12's <linux/fuse.h>.
#define FUSE_NOTIFY_RESEND_CODE 7

/// A session that neither hands over nor resumes, right after fuse_session_mount: its I/O goes
/// through the kit, which completes INIT and open replies for passthrough. 0 or an errno.
int mwk_session_route(struct fuse_session *session);

/// Whether the kernel's FUSE_INIT request (read, or replayed in a resumed session) offered
/// FUSE_PASSTHROUGH. Valid from the init callback on.
int mwk_init_offers_passthrough(void);

/// What the INIT reply gets, called from the init callback: FUSE_PASSTHROUGH with
/// `max_stack_depth` (0: no passthrough), or, with `refuse`, an error instead of the reply
/// (the kernel then fails every access to the mount until it is unmounted).
void mwk_answer_init(uint32_t max_stack_depth, int refuse);

/// A fresh session, right after fuse_session_mount: keeps the kernel's INIT request and, once
/// libfuse has answered it, sends `FUSE_CONNECTION=1` and `FUSE_INIT=<hex>` with the /dev/fuse
/// descriptor and `state_fd` (if >= 0) as SCM_RIGHTS on `supervisor_fd`. 0 or an errno.
int mwk_session_hand_over(struct fuse_session *session, int supervisor_fd, int state_fd);

/// A session on a connection another worker initialised, instead of fuse_session_mount: feeds
/// `request` (the saved INIT) to libfuse, swallows its reply, sends FUSE_NOTIFY_RESEND when
/// INIT offered FUSE_HAS_RESEND, then passes everything through. 0 or an errno.
int mwk_session_resume(struct fuse_session *session, int fuse_fd, const void *request,
                       size_t length);

/// Receives the supervisor's resume datagram on `supervisor_fd`: the /dev/fuse descriptor, the
/// state descriptor (-1 if none) and the INIT request (up to `capacity` bytes). 0 or an errno.
int mwk_receive_connection(int supervisor_fd, int *fuse_fd, int *state_fd,
                           unsigned char *request, size_t capacity, size_t *length);

/// memfd_create(name, MFD_CLOEXEC): a descriptor of anonymous shared memory, or -1 with errno.
int mwk_memfd(const char *name);

/// name_to_handle_at(fd, "", AT_EMPTY_PATH): writes a `struct file_handle` of the file open as
/// `fd` into `handle` and returns its whole length, or -1 with errno.
int mwk_handle_of(int fd, void *handle, size_t capacity);

/// open_by_handle_at(mount_fd, handle, flags) of a handle from mwk_handle_of (needs
/// CAP_DAC_READ_SEARCH); a descriptor or -1 with errno.
int mwk_open_by_handle(int mount_fd, const void *handle, int flags);

/// Whether the request the calling thread is serving was resent by the kernel after the
/// worker that first read it died (FUSE_NOTIFY_RESEND): it may have been carried out already.
int mwk_current_request_is_resent(void);

// MARK: FUSE passthrough (passthrough.c)

/// FUSE_DEV_IOC_BACKING_OPEN on the connection's /dev/fuse `device`: registers the file open
/// as `fd` (O_PATH will do) as a backing file; its id (> 0), or -errno.
int32_t mwk_backing_open(int device, int fd);

/// FUSE_DEV_IOC_BACKING_CLOSE: forgets a backing id (open files keep their backing file).
/// 0 or an errno.
int mwk_backing_close(int device, int32_t backing_id);

/// fuse_reply_open / fuse_reply_create with FOPEN_PASSTHROUGH and `backing_id` added to the
/// reply (and FOPEN_KEEP_CACHE removed). Only for sessions routed through the kit.
int mwk_reply_open_passthrough(struct fuse_req *req, const struct fuse_file_info *info,
                               int32_t backing_id);
int mwk_reply_create_passthrough(struct fuse_req *req, const struct fuse_entry_param *entry,
                                 const struct fuse_file_info *info, int32_t backing_id);

/// Whether this process may register backing files: the kernel asks for CAP_SYS_ADMIN in the
/// initial user namespace. 1 or 0.
int mwk_may_register_backing_files(void);

#endif
