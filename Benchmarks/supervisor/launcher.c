// launcher: the baseline of the supervisor benchmark, "the physical limit" of starting FUSE
// workers under the MountSupervisor worker protocol without a supervisor.
//
//   launcher WORKER ROOT N [ARG...]
//
// Raises its soft RLIMIT_NOFILE to the hard limit, creates ROOT/m0 … ROOT/m(N-1) (timed, as
// mountsupd creates mountpoints too) and starts N copies of `WORKER ROOT/mI` at once with
// posix_spawn (vfork) (`WORKER ARG... ROOT/mI` when ARGs are given): each with one end of its own socketpair(AF_UNIX, SOCK_SEQPACKET) as fd 3,
// MOUNTSUP_NOTIFY_FD=3, MOUNTSUP_NAME=mI and MOUNTSUP_MOUNTPOINT in its environment (no
// NOTIFY_SOCKET), stdin/stdout/stderr on /dev/null, its own session, cwd /. It then waits, in
// one epoll over the sockets, a signalfd and /proc/self/mountinfo (POLLPRI), never polling or
// sleeping, until every worker has sent READY=1 (or a bare newline) AND its FUSE mount is in
// mountinfo. The mount table is read only when it has changed and some worker is READY but not
// yet seen mounted (a worker sends READY from FUSE init, after its mount exists).
//
// Then it waits for a line (or EOF) on stdin, or SIGINT/SIGTERM/SIGHUP, and stops: umount2(mI, 0)
// for every mount, so that each worker gets FUSE destroy and exits by itself, and waits until
// every worker has exited (after 60 s the rest is killed and detached, and that is an error).
//
// Output on stdout, one line per event, `key=value` separated by spaces (times in ms, *_ns are
// CLOCK_MONOTONIC, the clock of Python's time.monotonic_ns()):
//   ready_ms=12.345 mounts=N table_reads=K start_ns=… ready_ns=…
//   stop_ms=3.210 exited=N
//   error=TEXT                       (then exit status 1; the stop is still carried out)
// Build: cc -O2 -o launcher launcher.c
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

enum { STOP_TIMEOUT_SECONDS = 60 };

struct worker {
  pid_t pid;
  int sock;      // our end of the socketpair, -1 once closed
  int ready;     // READY arrived
  int mounted;   // its FUSE mount was seen in mountinfo
  int exited;    // reaped
  int status;    // wait status when exited
};

static long count;
static struct worker *workers;
static char **mountpoints;
static int epoll_fd, signal_fd, mountinfo_fd;
static uint64_t tag_mountinfo, tag_signal, tag_stdin, tag_timer;
static int exited_count;
static long confirmed;         // READY and mounted
static long waiting_for_mount; // READY, mount not seen yet
static char error_text[1024];

// pid → worker index, open addressing.
static pid_t *pid_keys;
static long *pid_values;
static size_t pid_slots;

static int64_t now_ns(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
}

static void fail(const char *format, ...) {
  if (error_text[0]) return;  // the first error is the cause
  va_list arguments;
  va_start(arguments, format);
  vsnprintf(error_text, sizeof error_text, format, arguments);
  va_end(arguments);
}

static void die(const char *what) {
  const char *reason = strerror(errno);
  fprintf(stderr, "launcher: %s: %s\n", what, reason);
  printf("error=%s: %s\n", what, reason);
  exit(1);
}

static void pid_insert(pid_t pid, long index) {
  size_t slot = (size_t)pid & (pid_slots - 1);
  while (pid_keys[slot] != 0) slot = (slot + 1) & (pid_slots - 1);
  pid_keys[slot] = pid;
  pid_values[slot] = index;
}

static long pid_lookup(pid_t pid) {
  size_t slot = (size_t)pid & (pid_slots - 1);
  while (pid_keys[slot] != 0) {
    if (pid_keys[slot] == pid) return pid_values[slot];
    slot = (slot + 1) & (pid_slots - 1);
  }
  return -1;
}

static void watch(int fd, uint32_t events, uint64_t tag) {
  struct epoll_event event = {.events = events, .data.u64 = tag};
  if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &event) != 0) die("epoll_ctl");
}

static void set_ready(long index) {
  struct worker *worker = &workers[index];
  if (worker->ready) return;
  worker->ready = 1;
  if (worker->mounted) confirmed++;
  else waiting_for_mount++;
}

static void set_mounted(long index) {
  struct worker *worker = &workers[index];
  if (worker->mounted) return;
  worker->mounted = 1;
  if (worker->ready) confirmed++, waiting_for_mount--;
}

static void close_socket(long index) {
  struct worker *worker = &workers[index];
  if (worker->sock < 0) return;
  epoll_ctl(epoll_fd, EPOLL_CTL_DEL, worker->sock, NULL);
  close(worker->sock);
  worker->sock = -1;
}

/// Reads every pending datagram of worker `index`. READY=1 or a bare newline marks it ready;
/// ERROR= is kept for the message; EOF closes the socket.
static void drain_socket(long index) {
  struct worker *worker = &workers[index];
  char message[65536];
  while (worker->sock >= 0) {
    ssize_t got = recv(worker->sock, message, sizeof message - 1, MSG_DONTWAIT);
    if (got < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (got <= 0) {
      if (!worker->ready) fail("m%ld closed its notify socket before READY", index);
      close_socket(index);
      return;
    }
    message[got] = 0;
    if (strcmp(message, "\n") == 0) set_ready(index);
    for (char *line = message; line && *line;) {
      char *next = strchr(line, '\n');
      if (next) *next++ = 0;
      if (strcmp(line, "READY=1") == 0) set_ready(index);
      if (strncmp(line, "ERROR=", 6) == 0) fail("m%ld: %s", index, line + 6);
      line = next;
    }
  }
}

static void reap(void) {
  for (;;) {
    int status;
    pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid <= 0) return;
    long index = pid_lookup(pid);
    if (index < 0) continue;
    workers[index].exited = 1;
    workers[index].status = status;
    exited_count++;
    if (!(workers[index].ready && workers[index].mounted)) {
      if (WIFEXITED(status))
        fail("m%ld exited with status %d before it was ready", index, WEXITSTATUS(status));
      else
        fail("m%ld was killed by signal %d before it was ready", index, WTERMSIG(status));
    }
  }
}

/// Returns the signal read from the signalfd that is not SIGCHLD (0 if none); reaps on SIGCHLD.
static int handle_signals(void) {
  int other = 0;
  struct signalfd_siginfo info;
  while (read(signal_fd, &info, sizeof info) == (ssize_t)sizeof info) {
    if (info.ssi_signo == SIGCHLD) {
      reap();
    } else {
      other = (int)info.ssi_signo;
    }
  }
  return other;
}

/// Undoes the \ooo escapes of a mountinfo field in place.
static void unescape(char *field) {
  char *out = field;
  for (char *in = field; *in; in++) {
    if (in[0] == '\\' && in[1] >= '0' && in[1] <= '7' && in[2] && in[3]) {
      *out++ = (char)((in[1] - '0') * 64 + (in[2] - '0') * 8 + (in[3] - '0'));
      in += 3;
    } else {
      *out++ = *in;
    }
  }
  *out = 0;
}

static char *table;
static size_t table_capacity;
static int table_reads;

/// Reads /proc/self/mountinfo once and marks every worker whose FUSE mount is in it.
static void read_mount_table(const char *root) {
  table_reads++;
  if (lseek(mountinfo_fd, 0, SEEK_SET) < 0) die("lseek mountinfo");
  size_t used = 0;
  for (;;) {
    if (table_capacity - used < 65536) {
      table_capacity = table_capacity ? table_capacity * 2 : 1 << 20;
      table = realloc(table, table_capacity);
      if (!table) die("realloc");
    }
    ssize_t got = read(mountinfo_fd, table + used, table_capacity - used - 1);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) die("read mountinfo");
    if (got == 0) break;
    used += (size_t)got;
  }
  table[used] = 0;
  size_t root_length = strlen(root);
  for (char *line = table; line && *line;) {
    char *next = strchr(line, '\n');
    if (next) *next++ = 0;
    // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS
    char *separator = strstr(line, " - ");
    char *field = line;
    for (int i = 0; i < 4 && field; i++) {
      field = strchr(field, ' ');
      if (field) field++;
    }
    if (separator && field && strncmp(separator + 3, "fuse", 4) == 0) {
      char *end = strchr(field, ' ');
      if (end) {
        *end = 0;
        unescape(field);
        if (strncmp(field, root, root_length) == 0 && field[root_length] == '/' &&
            field[root_length + 1] == 'm') {
          char *digits = field + root_length + 2, *after;
          long index = strtol(digits, &after, 10);
          if (after != digits && *after == 0 && index >= 0 && index < count)
            set_mounted(index);
        }
      }
    }
    line = next;
  }
}

/// Workers from `first` on are never started: they count as gone (and have no pid to signal).
static void abandon_from(long first) {
  for (long i = first; i < count; i++) {
    workers[i].pid = 0;
    workers[i].sock = -1;
    workers[i].exited = 1;
    exited_count++;
  }
}

static double elapsed_ms(int64_t since) { return (double)(now_ns() - since) / 1e6; }

/// Unmounts every mount (plain umount2: the worker gets destroy and exits), waits for all
/// workers; after STOP_TIMEOUT_SECONDS or a further signal kills and detaches the rest.
static void stop_all(int64_t started, int report) {
  for (long i = 0; i < count; i++) {
    if (workers[i].exited || workers[i].pid <= 0) continue;
    if (umount2(mountpoints[i], 0) != 0) {
      if (errno != EINVAL && errno != ENOENT) {
        fail("umount %s: %s", mountpoints[i], strerror(errno));
      }
      if (!workers[i].mounted) kill(workers[i].pid, SIGTERM);  // it never mounted
    }
  }
  int timer = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
  if (timer < 0) die("timerfd_create");
  struct itimerspec deadline = {.it_value = {.tv_sec = STOP_TIMEOUT_SECONDS}};
  timerfd_settime(timer, 0, &deadline, NULL);
  watch(timer, EPOLLIN, tag_timer);
  int killed = 0;
  struct epoll_event events[256];
  while (exited_count < count) {
    int ready = epoll_wait(epoll_fd, events, 256, -1);
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) die("epoll_wait");
    int kill_now = 0;
    for (int e = 0; e < ready; e++) {
      uint64_t tag = events[e].data.u64;
      if (tag < (uint64_t)count) {
        drain_socket((long)tag);
      } else if (tag == tag_signal) {
        if (handle_signals() != 0) kill_now = 1;
      } else if (tag == tag_timer) {
        kill_now = 1;
        fail("%ld of %ld workers had not exited %d s after the unmount", count - exited_count,
             count, STOP_TIMEOUT_SECONDS);
      } else if (tag == tag_stdin) {
        char buffer[4096];
        if (read(STDIN_FILENO, buffer, sizeof buffer) <= 0) {
          epoll_ctl(epoll_fd, EPOLL_CTL_DEL, STDIN_FILENO, NULL);
        }
      }
    }
    if (kill_now && !killed) {
      killed = 1;
      for (long i = 0; i < count; i++) {
        if (workers[i].exited || workers[i].pid <= 0) continue;
        kill(workers[i].pid, SIGKILL);
        umount2(mountpoints[i], MNT_DETACH);
      }
    }
  }
  if (report) printf("stop_ms=%.3f exited=%d\n", elapsed_ms(started), exited_count);
  fflush(stdout);
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: launcher WORKER ROOT N [ARG...]\n");
    return 2;
  }
  int64_t started = now_ns();
  // Absolute paths: the workers start in / (as under mountsupd).
  char *worker_path = realpath(argv[1], NULL);
  if (!worker_path) die(argv[1]);
  char *root = realpath(argv[2], NULL);
  if (!root) die(argv[2]);
  count = strtol(argv[3], NULL, 10);
  if (count <= 0) {
    fprintf(stderr, "launcher: N must be positive\n");
    return 2;
  }
  struct rlimit limit;
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &limit) != 0) die("setrlimit");
  }
  signal(SIGPIPE, SIG_IGN);
  sigset_t handled;
  sigemptyset(&handled);
  sigaddset(&handled, SIGCHLD);
  sigaddset(&handled, SIGINT);
  sigaddset(&handled, SIGTERM);
  sigaddset(&handled, SIGHUP);
  if (sigprocmask(SIG_BLOCK, &handled, NULL) != 0) die("sigprocmask");

  workers = calloc((size_t)count, sizeof *workers);
  mountpoints = calloc((size_t)count, sizeof *mountpoints);
  for (pid_slots = 16; pid_slots < (size_t)count * 2; pid_slots *= 2) {
  }
  pid_keys = calloc(pid_slots, sizeof *pid_keys);
  pid_values = calloc(pid_slots, sizeof *pid_values);
  if (!workers || !mountpoints || !pid_keys || !pid_values) die("calloc");
  tag_mountinfo = (uint64_t)count;
  tag_signal = tag_mountinfo + 1;
  tag_stdin = tag_mountinfo + 2;
  tag_timer = tag_mountinfo + 3;

  epoll_fd = epoll_create1(EPOLL_CLOEXEC);
  signal_fd = signalfd(-1, &handled, SFD_CLOEXEC | SFD_NONBLOCK);
  mountinfo_fd = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
  int null_in = open("/dev/null", O_RDONLY | O_CLOEXEC);
  int null_out = open("/dev/null", O_WRONLY | O_CLOEXEC);
  if (epoll_fd < 0 || signal_fd < 0 || mountinfo_fd < 0 || null_in < 0 || null_out < 0)
    die("setting up descriptors");
  watch(signal_fd, EPOLLIN, tag_signal);
  watch(mountinfo_fd, EPOLLPRI, tag_mountinfo);

  // The workers' environment: ours without NOTIFY_SOCKET and MOUNTSUP_*, plus the protocol's.
  size_t environment_count = 0;
  while (environ[environment_count]) environment_count++;
  char **environment = calloc(environment_count + 4, sizeof *environment);
  if (!environment) die("calloc");
  size_t kept = 0;
  for (size_t i = 0; i < environment_count; i++) {
    if (strncmp(environ[i], "NOTIFY_SOCKET=", 14) == 0) continue;
    if (strncmp(environ[i], "MOUNTSUP_", 9) == 0) continue;
    environment[kept++] = environ[i];
  }
  environment[kept] = "MOUNTSUP_NOTIFY_FD=3";
  char name_variable[64], mountpoint_variable[4200];
  environment[kept + 1] = name_variable;
  environment[kept + 2] = mountpoint_variable;
  environment[kept + 3] = NULL;

  posix_spawnattr_t attributes;
  posix_spawnattr_init(&attributes);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attributes, &none);
  posix_spawnattr_setsigdefault(&attributes, &all);
  posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK |
                                            POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_USEVFORK);

  int extra = argc - 4;
  char **arguments = calloc((size_t)extra + 3, sizeof *arguments);
  if (!arguments) die("calloc");
  arguments[0] = worker_path;
  for (int i = 0; i < extra; i++) arguments[i + 1] = argv[4 + i];

  for (long i = 0; i < count; i++) {
    if (asprintf(&mountpoints[i], "%s/m%ld", root, i) < 0) die("asprintf");
    if (mkdir(mountpoints[i], 0755) != 0 && errno != EEXIST) die(mountpoints[i]);
  }
  for (long i = 0; i < count; i++) {
    workers[i].sock = -1;
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) {
      fail("socketpair for m%ld: %s", i, strerror(errno));
      abandon_from(i);
      break;
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, null_in, 0);
    posix_spawn_file_actions_adddup2(&actions, null_out, 1);
    posix_spawn_file_actions_adddup2(&actions, null_out, 2);
    posix_spawn_file_actions_adddup2(&actions, pair[1], 3);
    posix_spawn_file_actions_addchdir_np(&actions, "/");
    snprintf(name_variable, sizeof name_variable, "MOUNTSUP_NAME=m%ld", i);
    snprintf(mountpoint_variable, sizeof mountpoint_variable, "MOUNTSUP_MOUNTPOINT=%s",
             mountpoints[i]);
    arguments[extra + 1] = mountpoints[i];
    int error = posix_spawn(&workers[i].pid, worker_path, &actions, &attributes, arguments,
                            environment);
    posix_spawn_file_actions_destroy(&actions);
    close(pair[1]);
    if (error != 0) {
      close(pair[0]);
      fail("spawn %s for m%ld: %s", worker_path, i, strerror(error));
      abandon_from(i);
      break;
    }
    pid_insert(workers[i].pid, i);
    workers[i].sock = pair[0];
    watch(pair[0], EPOLLIN, (uint64_t)i);
  }

  int table_changed = 1, signalled = 0;
  struct epoll_event events[256];
  while (confirmed < count && !error_text[0] && !signalled) {
    int ready = epoll_wait(epoll_fd, events, 256, -1);
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) die("epoll_wait");
    for (int e = 0; e < ready; e++) {
      uint64_t tag = events[e].data.u64;
      if (tag < (uint64_t)count) {
        drain_socket((long)tag);
      } else if (tag == tag_mountinfo) {
        table_changed = 1;
      } else if (tag == tag_signal) {
        signalled = handle_signals();
      }
    }
    if (waiting_for_mount > 0 && table_changed) {
      table_changed = 0;
      read_mount_table(root);
    }
  }
  if (signalled) fail("interrupted by signal %d after %ld of %ld mounts were ready", signalled,
                      confirmed, count);
  if (!error_text[0]) {
    int64_t ready_at = now_ns();
    printf("ready_ms=%.3f mounts=%ld table_reads=%d start_ns=%lld ready_ns=%lld\n",
           (double)(ready_at - started) / 1e6, count, table_reads, (long long)started,
           (long long)ready_at);
    fflush(stdout);

    // Wait for a line or EOF on stdin, or a signal.
    int stdin_watched = 1;
    struct epoll_event event = {.events = EPOLLIN, .data.u64 = tag_stdin};
    if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, STDIN_FILENO, &event) != 0) stdin_watched = 0;
    int go = !stdin_watched && errno != EPERM;  // no stdin at all: stop at once
    if (!stdin_watched && errno == EPERM) {
      // A regular file or /dev/null: its "line" is there already.
      char buffer[4096];
      ssize_t ignored = read(STDIN_FILENO, buffer, sizeof buffer);
      (void)ignored;
      go = 1;
    }
    while (!go) {
      int ready = epoll_wait(epoll_fd, events, 256, -1);
      if (ready < 0 && errno == EINTR) continue;
      if (ready < 0) die("epoll_wait");
      for (int e = 0; e < ready; e++) {
        uint64_t tag = events[e].data.u64;
        if (tag < (uint64_t)count) {
          drain_socket((long)tag);
        } else if (tag == tag_signal) {
          if (handle_signals() != 0) go = 1;
        } else if (tag == tag_stdin) {
          char buffer[4096];
          ssize_t got = read(STDIN_FILENO, buffer, sizeof buffer);
          if (got <= 0 || memchr(buffer, '\n', (size_t)got)) go = 1;
        }
      }
    }
    if (stdin_watched) epoll_ctl(epoll_fd, EPOLL_CTL_DEL, STDIN_FILENO, NULL);
    int64_t stopping = now_ns();
    stop_all(stopping, 1);
  } else {
    stop_all(now_ns(), 0);
  }
  if (error_text[0]) {
    printf("error=%s\n", error_text);
    fprintf(stderr, "launcher: %s\n", error_text);
    fflush(stdout);
    return 1;
  }
  return 0;
}
