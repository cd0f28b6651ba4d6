#define _GNU_SOURCE
#define FUSE_USE_VERSION 314
#include "CMountWorkerKitSupport.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <fuse3/fuse_log.h>
#include <fuse3/fuse_lowlevel.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

_Static_assert(MWK_O_PATH == O_PATH, "O_PATH");
_Static_assert(MWK_AT_EMPTY_PATH == AT_EMPTY_PATH, "AT_EMPTY_PATH");
_Static_assert(MWK_O_DIRECT == O_DIRECT, "O_DIRECT");
_Static_assert(MWK_RENAME_NOREPLACE == RENAME_NOREPLACE, "RENAME_NOREPLACE");
_Static_assert(MWK_RENAME_EXCHANGE == RENAME_EXCHANGE, "RENAME_EXCHANGE");
_Static_assert(MWK_RENAME_WHITEOUT == RENAME_WHITEOUT, "RENAME_WHITEOUT");
_Static_assert(MWK_UTIME_NOW == UTIME_NOW, "UTIME_NOW");
_Static_assert(MWK_UTIME_OMIT == UTIME_OMIT, "UTIME_OMIT");

int mwk_renameat2(int olddirfd, const char *oldpath, int newdirfd,
                  const char *newpath, unsigned int flags) {
  return renameat2(olddirfd, oldpath, newdirfd, newpath, flags);
}

int mwk_fallocate(int fd, int mode, int64_t offset, int64_t length) {
  return fallocate(fd, mode, (off_t)offset, (off_t)length);
}

ssize_t mwk_copy_file_range(int fd_in, int64_t offset_in, int fd_out,
                            int64_t offset_out, size_t length,
                            unsigned int flags) {
  off_t in = (off_t)offset_in;
  off_t out = (off_t)offset_out;
  return copy_file_range(fd_in, &in, fd_out, &out, length, flags);
}

int64_t mwk_filesystem_type(int fd) {
  struct statfs statistics;
  if (fstatfs(fd, &statistics) != 0) return -1;
  return (int64_t)statistics.f_type;
}

int mwk_reply_fd_data(struct fuse_req *req, int fd, int64_t offset,
                      size_t size) {
  struct fuse_bufvec buf = FUSE_BUFVEC_INIT(size);
  buf.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
  buf.buf[0].fd = fd;
  buf.buf[0].pos = (off_t)offset;
  return fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
}

static pthread_mutex_t last_error_lock = PTHREAD_MUTEX_INITIALIZER;
static char last_error[512];
// libfuse sometimes logs one line in several calls; they are joined here.
static char pending_line[512];

static void capture_log(enum fuse_log_level level, const char *fmt,
                        va_list ap) {
  char message[512];
  vsnprintf(message, sizeof message, fmt, ap);
  fputs(message, stderr);
  if (level > FUSE_LOG_ERR) return;
  pthread_mutex_lock(&last_error_lock);
  size_t used = strnlen(pending_line, sizeof pending_line);
  snprintf(pending_line + used, sizeof pending_line - used, "%s", message);
  used = strnlen(pending_line, sizeof pending_line);
  if (used > 0 && pending_line[used - 1] == '\n') {
    while (used > 0 && pending_line[used - 1] == '\n') pending_line[--used] = '\0';
    memcpy(last_error, pending_line, used + 1);
    pending_line[0] = '\0';
  }
  pthread_mutex_unlock(&last_error_lock);
}

void mwk_capture_fuse_log(void) { fuse_set_log_func(capture_log); }

size_t mwk_last_fuse_error(char *buffer, size_t capacity) {
  if (capacity == 0) return 0;
  pthread_mutex_lock(&last_error_lock);
  size_t length = strnlen(last_error, sizeof last_error);
  if (length >= capacity) length = capacity - 1;
  memcpy(buffer, last_error, length);
  buffer[length] = '\0';
  pthread_mutex_unlock(&last_error_lock);
  return length;
}

void mwk_clear_fuse_error(void) {
  pthread_mutex_lock(&last_error_lock);
  last_error[0] = '\0';
  pending_line[0] = '\0';
  pthread_mutex_unlock(&last_error_lock);
}
