// The parts of mountsup-testworker: what main.c reads from the command line, how readiness is
// announced (readiness.c), and the file system it serves (filesystem.c).
#ifndef MOUNTSUP_TESTWORKER_H
#define MOUNTSUP_TESTWORKER_H

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

/// The command line's choices (see main.c for what each does).
struct testworker_options {
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
};

extern struct testworker_options options;
/// With --hang-after: the CLOCK_MONOTONIC instant from which no request is answered.
extern struct timespec hang_at;
/// The protocol's socket (fd 3), or -1.
extern int notify_fd;
/// The text of `hello`.
extern char hello_text[512];
/// Set when the FUSE session ends (destroy).
extern volatile int session_ended;
/// The FUSE operations of the served file system.
extern const struct fuse_lowlevel_ops operations;

void notify(const char *message, size_t length);
void notify_text(const char *message);
void sleep_ms(long ms);
void start_thread(void *(*body)(void *));
/// Sends READY the configured way; then the marker, the crash timer and the spew.
void announce_ready(void);
/// `--ready-delay`: READY from a thread, so that the session loop serves requests meanwhile.
void *announce_ready_later(void *unused);
/// Called before every answer: --slow waits; once --hang-after is due, or --hang-on's name was
/// looked up, it never returns.
void before_answer(void);

#endif
