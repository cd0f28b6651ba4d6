// mountsup-testworker: a tiny real FUSE worker that speaks the MountSupervisor protocol and
// misbehaves on demand, so the supervisor's tests exercise real mounts and real failures.
//
// It serves a read-only root with a file, `hello`, whose text names the worker, and an empty
// directory, `sub`, where a nested mount can go. Options:
//   --mount-delay MS     wait before mounting
//   --fail TEXT          print TEXT on stderr, send ERROR=TEXT and ERRNO=2, exit 1 before mounting
//   --fail-quietly TEXT  print TEXT on stderr and exit 1 before mounting, sending nothing
//   --crash-after MS     die of SIGALRM this long after READY
//   --hang-before-init   mount, then never answer a request (not even FUSE init)
//   --no-ready           serve, but never send READY
//   --garbage            send malformed datagrams on the notify fd before READY
//   --s6                 announce readiness with a bare newline (s6 convention)
//   --status TEXT        send STATUS=TEXT with READY
//   --sd-notify          announce readiness with sd_notify READY=1 on $NOTIFY_SOCKET instead
//   --linger             after the session ends, ignore SIGTERM and stay alive
//   --ready-delay MS     answer FUSE init at once, but send READY only MS ms later (from a thread:
//                        the mount answers requests meanwhile)
//   --ready-marker PATH  create the file PATH right after READY has been sent
//   --spew               once READY is sent, write numbered lines to stderr as fast as possible,
//                        forever, from a thread (the mount keeps answering); a full pipe just
//                        blocks that thread, a closed one ends it
//   --spew-line-length N the length of each spewed line in bytes, newline included (default 100)
//   --hang-after MS      MS after READY, stop answering: every request read from then on blocks
//                        its thread forever (SIGTERM included; SIGKILL ends it)
//   --hang-on NAME       stop answering, the same way, once NAME is looked up in the root
//   --slow MS            answer every request MS late, from several threads (a slow server that
//                        keeps answering)
#define _GNU_SOURCE
#define FUSE_USE_VERSION 314
#include <fuse3/fuse_lowlevel.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <stddef.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static struct {
  long mount_delay_ms;
  const char *fail_text;
  int fail_quietly;
  long crash_after_ms;
  int hang_before_init;
  int no_ready;
  int garbage;
  int s6;
  const char *status;
  int sd_notify;
  int linger;
  long ready_delay_ms;
  const char *ready_marker;
  int spew;
  long spew_line_length;
  long hang_after_ms;
  long slow_ms;
  const char *hang_on;
} options = {.spew_line_length = 100, .hang_after_ms = -1};

/// With --hang-after: the CLOCK_MONOTONIC instant from which no request is answered.
static struct timespec hang_at;

static int notify_fd = -1;
static char hello_text[512];
static volatile int session_ended;

static void notify(const char *message, size_t length) {
  if (notify_fd < 0) return;
  if (send(notify_fd, message, length, MSG_NOSIGNAL) < 0) perror("testworker: notify");
}

static void notify_text(const char *message) { notify(message, strlen(message)); }

/// sd_notify without libsystemd: one datagram to $NOTIFY_SOCKET (a path or an @abstract name).
static void sd_notify_ready(void) {
  const char *address = getenv("NOTIFY_SOCKET");
  if (!address || !address[0]) return;
  struct sockaddr_un target = {.sun_family = AF_UNIX};
  size_t length = strlen(address);
  if (length >= sizeof target.sun_path) return;
  memcpy(target.sun_path, address, length);
  if (target.sun_path[0] == '@') target.sun_path[0] = 0;
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return;
  const char message[] = "READY=1\nSTATUS=serving via sd_notify";
  if (sendto(fd, message, sizeof message - 1, 0, (struct sockaddr *)&target,
             (socklen_t)(offsetof(struct sockaddr_un, sun_path) + length)) < 0)
    perror("testworker: sd_notify");
  close(fd);
}

static void sleep_ms(long ms) {
  struct timespec delay = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
  while (nanosleep(&delay, &delay) != 0 && errno == EINTR) {
  }
}

/// Writes all of `length` bytes to `fd`, waiting while a non-blocking pipe is full. Returns 0, or
/// -1 when the reader is gone (EPIPE) or another error ends the writing.
static int write_all(int fd, const char *data, size_t length) {
  while (length > 0) {
    ssize_t written = write(fd, data, length);
    if (written >= 0) {
      data += written, length -= (size_t)written;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      struct pollfd writable = {.fd = fd, .events = POLLOUT};
      poll(&writable, 1, -1);
    } else if (errno != EINTR) {
      return -1;
    }
  }
  return 0;
}

/// `--spew`: numbered lines of `spew_line_length` bytes on stderr, as fast as the reader takes
/// them. Several lines go out per write; a blocked write blocks only this thread.
static void *spew_lines(void *unused) {
  (void)unused;
  sigset_t blocked;
  sigfillset(&blocked);
  pthread_sigmask(SIG_BLOCK, &blocked, NULL);  // signals belong to the FUSE session's thread
  size_t line = (size_t)options.spew_line_length;
  size_t per_write = line >= 65536 ? 1 : 65536 / line;
  char *buffer = malloc(line * per_write);
  if (!buffer) return NULL;
  unsigned long long number = 0;
  for (;;) {
    for (size_t i = 0; i < per_write; i++) {
      char *start = buffer + i * line;
      memset(start, '.', line - 1);
      start[line - 1] = '\n';
      char prefix[40];
      int length = snprintf(prefix, sizeof prefix, "spew %llu ", ++number);
      memcpy(start, prefix, (size_t)length < line - 1 ? (size_t)length : line - 1);
    }
    if (write_all(STDERR_FILENO, buffer, line * per_write) != 0) break;
  }
  free(buffer);
  return NULL;
}

static void start_thread(void *(*body)(void *)) {
  pthread_t thread;
  pthread_attr_t attributes;
  pthread_attr_init(&attributes);
  pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
  int error = pthread_create(&thread, &attributes, body, NULL);
  pthread_attr_destroy(&attributes);
  if (error != 0) {
    errno = error;
    perror("testworker: pthread_create");
  }
}

/// Sends READY the configured way; then the marker, the crash timer and the spew.
static void announce_ready(void) {
  if (!options.no_ready) {
    if (options.sd_notify) {
      sd_notify_ready();
    } else if (options.s6) {
      notify("\n", 1);
    } else {
      char message[600];
      snprintf(message, sizeof message, "READY=1%s%s", options.status ? "\nSTATUS=" : "",
               options.status ? options.status : "");
      notify_text(message);
    }
    if (options.ready_marker) {
      int fd = open(options.ready_marker, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      if (fd < 0) perror("testworker: ready marker");
      else close(fd);
    }
  }
  if (options.crash_after_ms > 0) {
    struct itimerval timer = {.it_value = {.tv_sec = options.crash_after_ms / 1000,
                                           .tv_usec = (options.crash_after_ms % 1000) * 1000}};
    setitimer(ITIMER_REAL, &timer, NULL);
  }
  if (options.spew) start_thread(spew_lines);
  if (options.hang_after_ms >= 0) {
    clock_gettime(CLOCK_MONOTONIC, &hang_at);
    hang_at.tv_sec += options.hang_after_ms / 1000;
    hang_at.tv_nsec += (options.hang_after_ms % 1000) * 1000000L;
    if (hang_at.tv_nsec >= 1000000000L) hang_at.tv_sec += 1, hang_at.tv_nsec -= 1000000000L;
  }
}

/// Set once --hang-on's name was looked up.
static volatile int hang_now;

/// Called before every answer: --slow waits; once --hang-after is due, or --hang-on's name was
/// looked up, it never returns.
static void before_answer(void) {
  if (options.slow_ms > 0) sleep_ms(options.slow_ms);
  if (!hang_now) {
    if (options.hang_after_ms < 0 || hang_at.tv_sec == 0) return;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (now.tv_sec < hang_at.tv_sec ||
        (now.tv_sec == hang_at.tv_sec && now.tv_nsec < hang_at.tv_nsec))
      return;
  }
  static int said;
  if (!said) {
    said = 1;
    printf("testworker: hanging, as asked\n");
    fflush(stdout);
  }
  for (;;) pause();
}

/// `--ready-delay`: READY from a thread, so that the session loop serves requests meanwhile.
static void *announce_ready_later(void *unused) {
  (void)unused;
  sigset_t blocked;
  sigfillset(&blocked);
  pthread_sigmask(SIG_BLOCK, &blocked, NULL);
  sleep_ms(options.ready_delay_ms);
  if (!session_ended) announce_ready();
  return NULL;
}

static void worker_init(void *userdata, struct fuse_conn_info *conn) {
  (void)userdata;
  (void)conn;
  if (options.garbage) {
    const unsigned char binary[] = {0xff, 0x00, 0xfe, '=', 0x01, '\n'};
    notify((const char *)binary, sizeof binary);
    notify_text("this line has no equals sign\n=\nREADY=0\nUNKNOWN_KEY=1");
    static char big[60000];
    memset(big, 'x', sizeof big);
    memcpy(big, "STATUS=", 7);
    notify(big, sizeof big);
  }
  if (options.ready_delay_ms > 0) {
    start_thread(announce_ready_later);
  } else {
    announce_ready();
  }
  printf("testworker: FUSE init done\n");
  fflush(stdout);
}

static void worker_destroy(void *userdata) {
  (void)userdata;
  session_ended = 1;
  notify_text("STOPPING=1");
}

static int fill_stat(fuse_ino_t ino, struct stat *st) {
  memset(st, 0, sizeof *st);
  st->st_ino = ino;
  if (ino == FUSE_ROOT_ID) {
    st->st_mode = S_IFDIR | 0755;
    st->st_nlink = 2;
    return 0;
  }
  if (ino == 3) {
    st->st_mode = S_IFDIR | 0755;
    st->st_nlink = 2;
    return 0;
  }
  if (ino == 2) {
    st->st_mode = S_IFREG | 0444;
    st->st_nlink = 1;
    st->st_size = (off_t)strlen(hello_text);
    return 0;
  }
  return -1;
}

static void worker_lookup(fuse_req_t req, fuse_ino_t parent, const char *name) {
  if (options.hang_on && parent == FUSE_ROOT_ID && strcmp(name, options.hang_on) == 0) hang_now = 1;
  before_answer();
  struct fuse_entry_param entry;
  memset(&entry, 0, sizeof entry);
  if (parent != FUSE_ROOT_ID || (strcmp(name, "hello") != 0 && strcmp(name, "sub") != 0)) {
    fuse_reply_err(req, ENOENT);
    return;
  }
  entry.ino = strcmp(name, "hello") == 0 ? 2 : 3;
  fill_stat(entry.ino, &entry.attr);
  fuse_reply_entry(req, &entry);
}

static void worker_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  (void)fi;
  before_answer();
  struct stat st;
  if (fill_stat(ino, &st) != 0) {
    fuse_reply_err(req, ENOENT);
    return;
  }
  fuse_reply_attr(req, &st, 0.0);
}

static void worker_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                           struct fuse_file_info *fi) {
  (void)fi;
  before_answer();
  if (ino != FUSE_ROOT_ID && ino != 3) {
    fuse_reply_err(req, ENOTDIR);
    return;
  }
  char buffer[1024];
  size_t used = 0;
  const char *names[] = {".", "..", "hello", "sub"};
  const fuse_ino_t inodes[] = {ino, FUSE_ROOT_ID, 2, 3};
  off_t count = ino == FUSE_ROOT_ID ? 4 : 2;
  for (off_t i = off; i < count; i++) {
    struct stat st;
    fill_stat(inodes[i], &st);
    size_t need = fuse_add_direntry(req, buffer + used, sizeof buffer - used, names[i], &st, i + 1);
    if (need > sizeof buffer - used || used + need > size) break;
    used += need;
  }
  fuse_reply_buf(req, buffer, used);
}

static void worker_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  before_answer();
  if (ino == 3) {
    fuse_reply_err(req, EISDIR);
  } else if (ino != 2) {
    fuse_reply_err(req, EISDIR);
  } else if ((fi->flags & O_ACCMODE) != O_RDONLY) {
    fuse_reply_err(req, EACCES);
  } else {
    fuse_reply_open(req, fi);
  }
}

static void worker_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                        struct fuse_file_info *fi) {
  (void)ino;
  (void)fi;
  before_answer();
  size_t length = strlen(hello_text);
  if ((size_t)off >= length) {
    fuse_reply_buf(req, NULL, 0);
    return;
  }
  size_t count = length - (size_t)off < size ? length - (size_t)off : size;
  fuse_reply_buf(req, hello_text + off, count);
}

static void worker_statfs(fuse_req_t req, fuse_ino_t ino) {
  (void)ino;
  before_answer();
  struct statvfs st = {.f_bsize = 4096, .f_frsize = 4096, .f_namemax = 255};
  fuse_reply_statfs(req, &st);
}

static const struct fuse_lowlevel_ops operations = {
    .init = worker_init,
    .destroy = worker_destroy,
    .lookup = worker_lookup,
    .getattr = worker_getattr,
    .readdir = worker_readdir,
    .open = worker_open,
    .read = worker_read,
    .statfs = worker_statfs,
};

static void usage(void) {
  fprintf(stderr, "usage: mountsup-testworker [--mount-delay MS] [--fail TEXT] "
                  "[--fail-quietly TEXT] [--crash-after MS] [--hang-before-init] [--no-ready] "
                  "[--garbage] [--s6] [--sd-notify] [--status TEXT] [--linger] "
                  "[--ready-delay MS] [--ready-marker PATH] [--spew] [--spew-line-length N] "
                  "[--hang-after MS] [--hang-on NAME] [--slow MS] "
                  "MOUNTPOINT\n");
  exit(2);
}

int main(int argc, char **argv) {
  const char *mountpoint = NULL;
  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i];
    const char *value = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(arg, "--mount-delay") == 0 && value) {
      options.mount_delay_ms = atol(value), i++;
    } else if (strcmp(arg, "--fail") == 0 && value) {
      options.fail_text = value, i++;
    } else if (strcmp(arg, "--fail-quietly") == 0 && value) {
      options.fail_text = value, options.fail_quietly = 1, i++;
    } else if (strcmp(arg, "--crash-after") == 0 && value) {
      options.crash_after_ms = atol(value), i++;
    } else if (strcmp(arg, "--ready-delay") == 0 && value) {
      options.ready_delay_ms = atol(value), i++;
    } else if (strcmp(arg, "--ready-marker") == 0 && value) {
      options.ready_marker = value, i++;
    } else if (strcmp(arg, "--hang-after") == 0 && value) {
      options.hang_after_ms = atol(value), i++;
    } else if (strcmp(arg, "--hang-on") == 0 && value) {
      options.hang_on = value, i++;
    } else if (strcmp(arg, "--slow") == 0 && value) {
      options.slow_ms = atol(value), i++;
    } else if (strcmp(arg, "--spew-line-length") == 0 && value) {
      options.spew_line_length = atol(value), i++;
      if (options.spew_line_length < 2) usage();
    } else if (strcmp(arg, "--spew") == 0) {
      options.spew = 1;
    } else if (strcmp(arg, "--status") == 0 && value) {
      options.status = value, i++;
    } else if (strcmp(arg, "--hang-before-init") == 0) {
      options.hang_before_init = 1;
    } else if (strcmp(arg, "--no-ready") == 0) {
      options.no_ready = 1;
    } else if (strcmp(arg, "--garbage") == 0) {
      options.garbage = 1;
    } else if (strcmp(arg, "--s6") == 0) {
      options.s6 = 1;
    } else if (strcmp(arg, "--sd-notify") == 0) {
      options.sd_notify = 1;
    } else if (strcmp(arg, "--linger") == 0) {
      options.linger = 1;
    } else if (arg[0] != '-' && !mountpoint) {
      mountpoint = arg;
    } else {
      usage();
    }
  }
  if (!mountpoint) usage();

  const char *fd_text = getenv("MOUNTSUP_NOTIFY_FD");
  if (fd_text) notify_fd = atoi(fd_text);
  const char *name = getenv("MOUNTSUP_NAME");
  snprintf(hello_text, sizeof hello_text, "hello from %s\n", name ? name : "testworker");
  printf("testworker: pid %d starting for %s\n", (int)getpid(), mountpoint);
  fflush(stdout);

  if (options.mount_delay_ms > 0) sleep_ms(options.mount_delay_ms);
  if (options.fail_text) {
    fprintf(stderr, "testworker: %s\n", options.fail_text);
    if (!options.fail_quietly) {
      char message[600];
      snprintf(message, sizeof message, "ERRNO=2\nERROR=%s", options.fail_text);
      notify_text(message);
    }
    return 1;
  }

  char *fuse_argv[] = {argv[0], "-o", "fsname=mountsup-testworker,subtype=mountsup-testworker",
                       NULL};
  struct fuse_args args = FUSE_ARGS_INIT(3, fuse_argv);
  struct fuse_session *session = fuse_session_new(&args, &operations, sizeof operations, NULL);
  if (!session) {
    notify_text("ERROR=cannot create the FUSE session");
    return 1;
  }
  if (fuse_set_signal_handlers(session) != 0 || fuse_session_mount(session, mountpoint) != 0) {
    char message[600];
    snprintf(message, sizeof message, "ERROR=cannot mount %s", mountpoint);
    notify_text(message);
    fprintf(stderr, "testworker: cannot mount %s\n", mountpoint);
    fuse_session_destroy(session);
    return 1;
  }
  if (options.hang_before_init) {
    for (;;) pause();
  }
  int result;
  if (options.slow_ms > 0) {
    struct fuse_loop_config *config = fuse_loop_cfg_create();
    fuse_loop_cfg_set_max_threads(config, 16);
    result = fuse_session_loop_mt(session, config);
    fuse_loop_cfg_destroy(config);
  } else {
    result = fuse_session_loop(session);
  }
  fuse_session_unmount(session);
  fuse_remove_signal_handlers(session);
  fuse_session_destroy(session);
  printf("testworker: session ended\n");
  fflush(stdout);
  if (options.linger) {
    signal(SIGTERM, SIG_IGN);
    for (;;) pause();
  }
  return result < 0 ? 1 : 0;
}
