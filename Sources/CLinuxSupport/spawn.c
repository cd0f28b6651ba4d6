#define _GNU_SOURCE
#include "CLinuxSupport.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/close_range.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/// The steps the child takes, in order; the index travels back in a `spawn_report`.
static const char *const spawn_steps[] = {
    "copy the low descriptors", "reset signals", "setsid", "set death signal", "open /dev/null", "move descriptors",
    "set up descriptors", "set the descriptor limit", "setgroups", "setgid", "setuid", "chdir /",
    "close descriptors", "exec",
};

enum {
  STEP_UNSHARE, STEP_SIGNALS, STEP_SETSID, STEP_DEATHSIG, STEP_DEVNULL, STEP_MOVE, STEP_DUP, STEP_NOFILE,
  STEP_SETGROUPS,
  STEP_SETGID, STEP_SETUID, STEP_CHDIR, STEP_CLOSE, STEP_EXEC,
};

/// Where a child that fails before exec says which step failed and why. It lies in the
/// parent's memory, which the child shares until exec (vfork), and the parent reads it only once
/// the child has exec'd or exited: no pipe per spawn is needed (glibc's posix_spawn does the
/// same).
typedef struct {
  volatile int step;  ///< -1 while nothing failed
  volatile int error;
} spawn_report;

/// Only async-signal-safe calls from here to exec, and no writes to memory but the report: the
/// child runs in the parent's address space (vfork) and the parent may be multi-threaded.
static void _Noreturn child_fail(spawn_report *report, int step) {
  report->error = errno;
  report->step = step;
  _exit(127);
}

static void _Noreturn run_child(const mountsup_spawn_request *request, pid_t parent,
                                spawn_report *report) {
  // Dispositions first, then the mask: a handler of the parent must never run in the child,
  // which shares the parent's memory until exec.
  struct sigaction default_action;
  memset(&default_action, 0, sizeof default_action);
  default_action.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; sig++) {
    if (sig != SIGKILL && sig != SIGSTOP) sigaction(sig, &default_action, NULL);
  }
  sigset_t all;
  sigemptyset(&all);
  if (sigprocmask(SIG_SETMASK, &all, NULL) != 0) child_fail(report, STEP_SIGNALS);
  if (setsid() < 0) child_fail(report, STEP_SETSID);
  if (request->death_signal > 0) {
    if (prctl(PR_SET_PDEATHSIG, request->death_signal) != 0) child_fail(report, STEP_DEATHSIG);
    if (getppid() != parent) _exit(127);  // the parent is already gone
  }
  int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (devnull < 0) child_fail(report, STEP_DEVNULL);

  // Move every source above the targets first, so that dup2 never overwrites a source.
  int output = fcntl(request->output_fd, F_DUPFD_CLOEXEC, 10);
  int notify = request->notify_fd >= 0 ? fcntl(request->notify_fd, F_DUPFD_CLOEXEC, 10) : -1;
  int input = fcntl(devnull, F_DUPFD_CLOEXEC, 10);
  if (output < 0 || input < 0 || (request->notify_fd >= 0 && notify < 0))
    child_fail(report, STEP_MOVE);
  if (dup2(input, 0) < 0 || dup2(output, 1) < 0 || dup2(output, 2) < 0)
    child_fail(report, STEP_DUP);
  if (notify >= 0 && dup2(notify, 3) < 0) child_fail(report, STEP_DUP);

  if (request->set_nofile && setrlimit(RLIMIT_NOFILE, &request->nofile) != 0)
    child_fail(report, STEP_NOFILE);
  if (request->switch_ids) {
    // Raw system calls: glibc's wrappers would try to change the ids of the parent's threads,
    // whose bookkeeping this child shares until exec.
    if (syscall(SYS_setgroups, request->group_count, request->groups) != 0)
      child_fail(report, STEP_SETGROUPS);
    if (syscall(SYS_setresgid, request->gid, request->gid, request->gid) != 0)
      child_fail(report, STEP_SETGID);
    if (syscall(SYS_setresuid, request->uid, request->uid, request->uid) != 0)
      child_fail(report, STEP_SETUID);
  }
  if (chdir("/") != 0) child_fail(report, STEP_CHDIR);
  // Close-on-exec for everything above the handed-over fds.
  unsigned first_closed = notify >= 0 ? 4 : 3;
  if (syscall(SYS_close_range, first_closed, ~0U, CLOSE_RANGE_CLOEXEC) != 0)
    child_fail(report, STEP_CLOSE);
  execve(request->path, request->argv, request->envp);
  child_fail(report, STEP_EXEC);
}

#ifndef CLOSE_RANGE_UNSHARE
#define CLOSE_RANGE_UNSHARE (1U << 1)
#endif

int mountsup_spawn_slots_open(mountsup_spawn_slots *slots) {
  int fds[3];
  for (int i = 0; i < 3; i++) {
    fds[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fds[i] < 0) {
      int saved = errno;
      while (i-- > 0) close(fds[i]);
      return saved;
    }
  }
  slots->notify = fds[0];
  slots->output = fds[1];
  slots->placeholder = fds[2];
  int highest = fds[0] > fds[1] ? fds[0] : fds[1];
  slots->floor = (highest > fds[2] ? highest : fds[2]) + 1;
  return 0;
}

/// What the clone child needs; it lives on the parent's stack, which the child shares.
typedef struct {
  mountsup_spawn_request request;
  const mountsup_spawn_slots *slots;
  pid_t parent;
  spawn_report *report;
} clone_arguments;

/// The child of a spawn with slots: it shares the parent's descriptor table until its first
/// step, which gives it a copy of the low end only (the slots and what lies below them). The
/// kernel then neither copies the whole table at the clone nor closes it at the exec: both
/// would cost in proportion to the descriptors of every other mount.
static int clone_child(void *argument) {
  clone_arguments *arguments = argument;
  const mountsup_spawn_slots *slots = arguments->slots;
  if (syscall(SYS_close_range, (unsigned)slots->floor, ~0U, CLOSE_RANGE_UNSHARE) != 0 &&
      syscall(SYS_unshare, CLONE_FILES) != 0) {
    // Still sharing the parent's table: report and leave without touching it.
    child_fail(arguments->report, STEP_UNSHARE);
  }
  run_child(&arguments->request, arguments->parent, arguments->report);
}

int mountsup_spawn(const mountsup_spawn_request *request, const mountsup_spawn_slots *slots,
                   pid_t *pid, int *pidfd, const char **failed_step) {
  spawn_report report = {.step = -1, .error = 0};
  pid_t parent = getpid();
  pid_t child;
  int fork_error = 0;
  int fd = -1;
  if (slots != NULL) {
    // The worker's descriptors go into the slots for the moment of the clone.
    if (dup2(request->notify_fd >= 0 ? request->notify_fd : slots->placeholder, slots->notify) < 0 ||
        dup2(request->output_fd, slots->output) < 0) {
      int saved = errno;
      *failed_step = "place the worker's descriptors";
      return saved;
    }
    clone_arguments arguments = {
        .request = *request, .slots = slots, .parent = parent, .report = &report};
    arguments.request.notify_fd = request->notify_fd >= 0 ? slots->notify : -1;
    arguments.request.output_fd = slots->output;
    enum { STACK_SIZE = 64 * 1024 };
    char *stack = malloc(STACK_SIZE);
    if (stack == NULL) {
      child = -1;
      fork_error = ENOMEM;
    } else {
      // CLONE_VM | CLONE_VFORK, as vfork: the child borrows this memory until exec, and this
      // thread waits meanwhile. CLONE_FILES: no copy of the descriptor table (see clone_child).
      // CLONE_PIDFD: the pidfd (close-on-exec) comes with the clone.
      child = clone(clone_child, stack + STACK_SIZE,
                    CLONE_VM | CLONE_VFORK | CLONE_FILES | CLONE_PIDFD | SIGCHLD, &arguments, &fd);
      fork_error = errno;
      free(stack);
    }
    // The slots must not keep the worker's pipes open: back to the placeholder.
    dup3(slots->placeholder, slots->notify, O_CLOEXEC);
    dup3(slots->placeholder, slots->output, O_CLOEXEC);
  } else {
    // vfork: the child borrows the parent's memory until exec instead of copying its page
    // tables. The parent's thread waits meanwhile; the child makes only async-signal-safe calls.
    child = vfork();
    if (child == 0) run_child(request, parent, &report);
    fork_error = errno;
  }
  if (child < 0) {
    *failed_step = "fork";
    return fork_error;
  }
  if (report.step >= 0) {
    if (fd >= 0) close(fd);
    waitpid(child, NULL, 0);
    int step = report.step;
    *failed_step = step <= STEP_EXEC ? spawn_steps[step] : "spawn";
    return report.error;
  }
  // A pidfd is close-on-exec from the start, from the clone or from pidfd_open.
  if (fd < 0) fd = (int)syscall(SYS_pidfd_open, child, 0);
  if (fd < 0) {
    int saved = errno;
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    *failed_step = "pidfd_open";
    return saved;
  }
  *pid = child;
  *pidfd = fd;
  return 0;
}

int mountsup_reap(int pidfd, int *exit_code, int *exit_signal) {
  siginfo_t info;
  memset(&info, 0, sizeof info);
  if (waitid((idtype_t)P_PIDFD, (id_t)pidfd, &info, WEXITED | WNOHANG) != 0) return -1;
  if (info.si_pid == 0) return 0;
  *exit_code = info.si_code == CLD_EXITED ? info.si_status : -1;
  *exit_signal = info.si_code == CLD_EXITED ? 0 : info.si_status;
  return 1;
}

int mountsup_pidfd_signal(int pidfd, int signal) {
  return (int)syscall(SYS_pidfd_send_signal, pidfd, signal, NULL, 0);
}
