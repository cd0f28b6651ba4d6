// mountsup-testworker: readiness announced the configured way, and the threads it uses.
#include "testworker.h"

void notify(const char *message, size_t length) {
  if (notify_fd < 0) return;
  if (send(notify_fd, message, length, MSG_NOSIGNAL) < 0) perror("testworker: notify");
}

void notify_text(const char *message) { notify(message, strlen(message)); }

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

void sleep_ms(long ms) {
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

void start_thread(void *(*body)(void *)) {
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
void announce_ready(void) {
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

/// `--ready-delay`: READY from a thread, so that the session loop serves requests meanwhile.
void *announce_ready_later(void *unused) {
  (void)unused;
  sigset_t blocked;
  sigfillset(&blocked);
  pthread_sigmask(SIG_BLOCK, &blocked, NULL);
  sleep_ms(options.ready_delay_ms);
  if (!session_ended) announce_ready();
  return NULL;
}
