#define _GNU_SOURCE
#define FUSE_USE_VERSION 314
#include "CMountWorkerKitSupport.h"
#include "passthrough.h"

#include <errno.h>
#include <fcntl.h>
#include <fuse3/fuse_lowlevel.h>
#include <linux/fuse.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

// The session's I/O, routed through libfuse's custom I/O (fuse_session_custom_io). One FUSE
// session per process, so the state is the process's.
//
// Every session keeps the raw FUSE_INIT request it reads (what the kernel offers) and completes
// libfuse's INIT reply with what libfuse 3.14 does not know: FUSE_PASSTHROUGH and its stack
// depth, or a refusal. Replies to opens get the backing id of FUSE passthrough (passthrough.c).
//
// A fresh session that hands over keeps the request and, once libfuse has answered it, hands
// the supervisor the connection: one datagram on the notify socket with the /dev/fuse
// descriptor and the state descriptor (SCM_RIGHTS) and the request in hex.
//
// A resumed session gets the saved INIT from its first read instead of the device, swallows
// libfuse's answer (the kernel had its answer from the first worker), asks the kernel to resend
// what the dead worker had read but not answered (FUSE_NOTIFY_RESEND), and only then lets
// reads reach the device.

enum { MODE_PLAIN, MODE_FRESH, MODE_RESUMED };

static int mode = MODE_PLAIN;
static int notify_fd = -1;
static int state_fd = -1;
static unsigned char init_request[MWK_INIT_REQUEST_MAX];
static size_t init_length;
static uint64_t init_unique;
static atomic_int init_captured;
static atomic_int handed_over;
// What the INIT reply gets (set from the init callback, before libfuse writes the reply).
static uint32_t init_stack_depth;
static int init_refused;

static pthread_mutex_t resume_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t resume_done = PTHREAD_COND_INITIALIZER;
static int init_fed;
static int resumed;

static _Thread_local uint64_t current_unique;
static _Thread_local void *populated_buffer;

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

/// Faults in a thread's request buffer once. The kernel copies a request into the reader's
/// memory; when the reader is killed during the copy and a page of it must first be faulted in,
/// the copy fails and the kernel ends the request with EIO instead of keeping it for a
/// successor. With every page present the copy cannot fail that way.
static void populate(void *buffer, size_t length) {
  if (buffer == populated_buffer) return;
  populated_buffer = buffer;
  long page = sysconf(_SC_PAGESIZE);
  uintptr_t start = (uintptr_t)buffer & ~(uintptr_t)(page - 1);
  uintptr_t end = ((uintptr_t)buffer + length + (uintptr_t)page - 1) & ~(uintptr_t)(page - 1);
  if (madvise((void *)start, end - start, MADV_POPULATE_WRITE) != 0) memset(buffer, 0, length);
}

/// Tells whether INIT offered FUSE_HAS_RESEND (flags2 bit 7, valid with FUSE_INIT_EXT).
static int init_offers_resend(const void *request, size_t length) {
  if (length < sizeof(struct fuse_in_header) + 20) return 0;
  const unsigned char *bytes = request;
  uint32_t flags, flags2;
  memcpy(&flags, bytes + sizeof(struct fuse_in_header) + 12, sizeof flags);
  memcpy(&flags2, bytes + sizeof(struct fuse_in_header) + 16, sizeof flags2);
  return (flags & (1u << 30)) != 0 && (flags2 & (1u << 7)) != 0;
}

/// Once the supervisor holds the connection, the worker must not unmount when the supervisor
/// dies (SIGTERM, the death signal it was started with, makes libfuse unmount): a supervisor
/// restarted by systemd finds the connection in its fd store and resumes the mount. Without
/// one, the connection dies with the last process holding it, and the next start detaches it.
static void die_with_the_supervisor(void) {
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0)
    fprintf(stderr, "fuse: cannot set the death signal: %s\n", strerror(errno));
}

static void hand_over(int fuse_fd) {
  static const char hex[] = "0123456789abcdef";
  char message[64 + 2 * MWK_INIT_REQUEST_MAX];
  int used = snprintf(message, sizeof message, "FUSE_CONNECTION=1\nFUSE_INIT=");
  for (size_t i = 0; i < init_length; i++) {
    message[used++] = hex[init_request[i] >> 4];
    message[used++] = hex[init_request[i] & 15];
  }
  int fds[2] = {fuse_fd, state_fd};
  int count = state_fd >= 0 ? 2 : 1;
  union {
    struct cmsghdr header;
    char space[CMSG_SPACE(sizeof fds)];
  } control;
  memset(&control, 0, sizeof control);
  struct iovec iov = {.iov_base = message, .iov_len = (size_t)used};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.space,
                       .msg_controllen = CMSG_SPACE(sizeof(int) * count)};
  struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
  cmsg->cmsg_level = SOL_SOCKET;
  cmsg->cmsg_type = SCM_RIGHTS;
  cmsg->cmsg_len = CMSG_LEN(sizeof(int) * count);
  memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * count);
  if (sendmsg(notify_fd, &msg, MSG_NOSIGNAL) < 0) {
    fprintf(stderr, "fuse: cannot hand the connection to the supervisor: %s\n", strerror(errno));
    return;
  }
  die_with_the_supervisor();
}

static ssize_t kit_read(int fd, void *buffer, size_t length, void *userdata) {
  (void)userdata;
  if (mode == MODE_RESUMED) {
    pthread_mutex_lock(&resume_lock);
    if (!init_fed) {
      init_fed = 1;
      pthread_mutex_unlock(&resume_lock);
      if (length < init_length) {
        errno = EINVAL;
        return -1;
      }
      memcpy(buffer, init_request, init_length);
      current_unique = init_unique;
      return (ssize_t)init_length;
    }
    // No request may be read before the resend: it would be sent twice.
    while (!resumed) pthread_cond_wait(&resume_done, &resume_lock);
    pthread_mutex_unlock(&resume_lock);
  }
  populate(buffer, length);
  ssize_t got = read(fd, buffer, length);
  if (got >= (ssize_t)sizeof(struct fuse_in_header)) {
    const struct fuse_in_header *header = buffer;
    current_unique = header->unique;
    if (mode != MODE_RESUMED && header->opcode == FUSE_INIT && !atomic_load(&init_captured) &&
        (size_t)got <= sizeof init_request) {
      memcpy(init_request, buffer, (size_t)got);
      init_length = (size_t)got;
      init_unique = header->unique;
      atomic_store(&init_captured, 1);
    }
  }
  return got;
}

static ssize_t kit_writev(int fd, struct iovec *iov, int count, void *userdata) {
  (void)userdata;
  uint64_t unique = 0;
  if (count > 0 && iov[0].iov_len >= sizeof(struct fuse_out_header))
    unique = ((const struct fuse_out_header *)iov[0].iov_base)->unique;
  if (mode == MODE_RESUMED && unique == init_unique) {
    pthread_mutex_lock(&resume_lock);
    if (!resumed) {
      size_t total = 0;
      for (int i = 0; i < count; i++) total += iov[i].iov_len;
      if (init_offers_resend(init_request, init_length)) {
        struct fuse_out_header resend = {.len = sizeof resend, .error = FUSE_NOTIFY_RESEND_CODE,
                                         .unique = 0};
        if (write(fd, &resend, sizeof resend) < 0)
          fprintf(stderr, "fuse: FUSE_NOTIFY_RESEND failed: %s\n", strerror(errno));
      }
      resumed = 1;
      pthread_cond_broadcast(&resume_done);
      pthread_mutex_unlock(&resume_lock);
      return (ssize_t)total;
    }
    pthread_mutex_unlock(&resume_lock);
  }
  int is_init_reply = mode != MODE_RESUMED && atomic_load(&init_captured) && unique == init_unique;
  if (is_init_reply && init_refused) {
    struct fuse_out_header refusal = {.len = sizeof refusal, .error = -EPROTO, .unique = unique};
    size_t total = 0;
    for (int i = 0; i < count; i++) total += iov[i].iov_len;
    return write(fd, &refusal, sizeof refusal) < 0 ? -1 : (ssize_t)total;
  }
  if (is_init_reply && init_stack_depth > 0) mwk_patch_init_reply(iov, count, init_stack_depth);
  mwk_patch_open_reply(iov, count);
  ssize_t written = writev(fd, iov, count);
  if (mode == MODE_FRESH && written >= 0 && notify_fd >= 0 && is_init_reply &&
      !atomic_exchange(&handed_over, 1))
    hand_over(fd);
  return written;
}

static ssize_t kit_splice(int in, off_t *in_offset, int out, off_t *out_offset, size_t length,
                          unsigned int flags, void *userdata) {
  (void)userdata;
  return splice(in, in_offset, out, out_offset, length, flags);
}

// Replies may be spliced (the INIT reply never is). Requests are always read through kit_read,
// which keeps them from the device until the resend and knows which were resent: without a
// splice_receive, libfuse does not offer FUSE_CAP_SPLICE_READ.
static const struct fuse_custom_io kit_io = {
    .writev = kit_writev, .read = kit_read, .splice_send = kit_splice};

int mwk_session_route(struct fuse_session *session) {
  // A test process may serve one session after another.
  atomic_store(&init_captured, 0);
  init_stack_depth = 0;
  init_refused = 0;
  int result = fuse_session_custom_io(session, &kit_io, fuse_session_fd(session));
  return result < 0 ? -result : 0;
}

int mwk_init_offers_passthrough(void) {
  if (!atomic_load(&init_captured) && mode != MODE_RESUMED) return 0;
  return mwk_init_request_offers_passthrough(init_request, init_length);
}

void mwk_answer_init(uint32_t max_stack_depth, int refuse) {
  init_stack_depth = max_stack_depth;
  init_refused = refuse;
}

int mwk_session_hand_over(struct fuse_session *session, int supervisor_fd, int state) {
  mode = MODE_FRESH;
  notify_fd = supervisor_fd;
  state_fd = state;
  int result = fuse_session_custom_io(session, &kit_io, fuse_session_fd(session));
  return result < 0 ? -result : 0;
}

int mwk_session_resume(struct fuse_session *session, int fuse_fd, const void *request,
                       size_t length) {
  if (length < sizeof(struct fuse_in_header) || length > sizeof init_request) return EINVAL;
  const struct fuse_in_header *header = request;
  if (header->opcode != FUSE_INIT) return EINVAL;
  mode = MODE_RESUMED;
  die_with_the_supervisor();
  memcpy(init_request, request, length);
  init_length = length;
  init_unique = header->unique;
  int result = fuse_session_custom_io(session, &kit_io, fuse_fd);
  return result < 0 ? -result : 0;
}

int mwk_receive_connection(int supervisor_fd, int *fuse_fd, int *state, unsigned char *request,
                           size_t capacity, size_t *length) {
  char text[64 + 2 * MWK_INIT_REQUEST_MAX + 1];
  union {
    struct cmsghdr header;
    char space[CMSG_SPACE(sizeof(int) * 2)];
  } control;
  struct iovec iov = {.iov_base = text, .iov_len = sizeof text - 1};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.space,
                       .msg_controllen = sizeof control.space};
  ssize_t got;
  do {
    got = recvmsg(supervisor_fd, &msg, MSG_CMSG_CLOEXEC);
  } while (got < 0 && errno == EINTR);
  if (got < 0) return errno;
  text[got] = '\0';
  *fuse_fd = -1;
  *state = -1;
  for (struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg); cmsg; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
    if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS) continue;
    size_t n = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    int fds[2] = {-1, -1};
    memcpy(fds, CMSG_DATA(cmsg), sizeof(int) * (n < 2 ? n : 2));
    for (size_t i = 2; i < n; i++) {
      int extra;
      memcpy(&extra, CMSG_DATA(cmsg) + i * sizeof(int), sizeof extra);
      close(extra);
    }
    *fuse_fd = fds[0];
    *state = fds[1];
  }
  const char *hex = strstr(text, "FUSE_INIT=");
  if (*fuse_fd < 0 || hex == NULL) {
    if (*fuse_fd >= 0) close(*fuse_fd);
    if (*state >= 0) close(*state);
    return EPROTO;
  }
  hex += strlen("FUSE_INIT=");
  size_t count = 0;
  while (hex[0] && hex[1] && hex[0] != '\n' && count < capacity) {
    unsigned value;
    if (sscanf(hex, "%2x", &value) != 1) break;
    request[count++] = (unsigned char)value;
    hex += 2;
  }
  *length = count;
  return 0;
}

int mwk_current_request_is_resent(void) { return (current_unique >> 63) != 0; }

int mwk_memfd(const char *name) { return memfd_create(name, MFD_CLOEXEC); }

int mwk_handle_of(int fd, void *handle, size_t capacity) {
  if (capacity < sizeof(struct file_handle)) {
    errno = EINVAL;
    return -1;
  }
  struct file_handle *file = handle;
  file->handle_bytes = (unsigned)(capacity - sizeof(struct file_handle));
  int mount_id;
  if (name_to_handle_at(fd, "", file, &mount_id, AT_EMPTY_PATH) != 0) return -1;
  return (int)(sizeof(struct file_handle) + file->handle_bytes);
}

int mwk_open_by_handle(int mount_fd, const void *handle, int flags) {
  return open_by_handle_at(mount_fd, (struct file_handle *)handle, flags);
}
