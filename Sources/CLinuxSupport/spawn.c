#define _GNU_SOURCE
#include "CLinuxSupport.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/close_range.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/// The steps the child takes, in order; the index travels back through the error pipe.
static const char *const spawn_steps[] = {
    "reset signals", "setsid", "set death signal", "open /dev/null", "move descriptors",
    "set up descriptors", "set the descriptor limit", "setgroups", "setgid", "setuid", "chdir /",
    "close descriptors", "exec",
};

enum {
  STEP_SIGNALS, STEP_SETSID, STEP_DEATHSIG, STEP_DEVNULL, STEP_MOVE, STEP_DUP, STEP_NOFILE,
  STEP_SETGROUPS,
  STEP_SETGID, STEP_SETUID, STEP_CHDIR, STEP_CLOSE, STEP_EXEC,
};

/// Only async-signal-safe calls from here to exec, and no writes to memory: the child runs in
/// the parent's address space (vfork) and the parent may be multi-threaded.
static void _Noreturn child_fail(int report_fd, int step) {
  int payload[2] = {step, errno};
  ssize_t ignored = write(report_fd, payload, sizeof payload);
  (void)ignored;
  _exit(127);
}

static void _Noreturn run_child(const mountsup_spawn_request *request, pid_t parent,
                                int report_fd) {
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
  if (sigprocmask(SIG_SETMASK, &all, NULL) != 0) child_fail(report_fd, STEP_SIGNALS);
  if (setsid() < 0) child_fail(report_fd, STEP_SETSID);
  if (request->death_signal > 0) {
    if (prctl(PR_SET_PDEATHSIG, request->death_signal) != 0) child_fail(report_fd, STEP_DEATHSIG);
    if (getppid() != parent) _exit(127);  // the parent is already gone
  }
  int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (devnull < 0) child_fail(report_fd, STEP_DEVNULL);

  // Move every source above the targets first, so that dup2 never overwrites a source.
  int output = fcntl(request->output_fd, F_DUPFD_CLOEXEC, 10);
  int notify = request->notify_fd >= 0 ? fcntl(request->notify_fd, F_DUPFD_CLOEXEC, 10) : -1;
  int input = fcntl(devnull, F_DUPFD_CLOEXEC, 10);
  if (output < 0 || input < 0 || (request->notify_fd >= 0 && notify < 0))
    child_fail(report_fd, STEP_MOVE);
  if (dup2(input, 0) < 0 || dup2(output, 1) < 0 || dup2(output, 2) < 0)
    child_fail(report_fd, STEP_DUP);
  if (notify >= 0 && dup2(notify, 3) < 0) child_fail(report_fd, STEP_DUP);

  if (request->set_nofile && setrlimit(RLIMIT_NOFILE, &request->nofile) != 0)
    child_fail(report_fd, STEP_NOFILE);
  if (request->switch_ids) {
    // Raw system calls: glibc's wrappers would try to change the ids of the parent's threads,
    // whose bookkeeping this child shares until exec.
    if (syscall(SYS_setgroups, request->group_count, request->groups) != 0)
      child_fail(report_fd, STEP_SETGROUPS);
    if (syscall(SYS_setresgid, request->gid, request->gid, request->gid) != 0)
      child_fail(report_fd, STEP_SETGID);
    if (syscall(SYS_setresuid, request->uid, request->uid, request->uid) != 0)
      child_fail(report_fd, STEP_SETUID);
  }
  if (chdir("/") != 0) child_fail(report_fd, STEP_CHDIR);
  // Close-on-exec for everything above the handed-over fds; the report pipe closes at exec.
  unsigned first_closed = notify >= 0 ? 4 : 3;
  if (syscall(SYS_close_range, first_closed, ~0U, CLOSE_RANGE_CLOEXEC) != 0)
    child_fail(report_fd, STEP_CLOSE);
  execve(request->path, request->argv, request->envp);
  child_fail(report_fd, STEP_EXEC);
}

int mountsup_spawn(const mountsup_spawn_request *request, pid_t *pid, int *pidfd,
                   const char **failed_step) {
  int report[2];
  if (pipe2(report, O_CLOEXEC) != 0) {
    *failed_step = "create the spawn report pipe";
    return errno;
  }
  pid_t parent = getpid();
  // vfork: the child borrows the parent's memory until exec instead of copying its page tables,
  // which for a supervisor of many mounts is most of the cost of a start. The parent's thread
  // waits meanwhile; the child makes only async-signal-safe calls.
  pid_t child = vfork();
  if (child < 0) {
    int saved = errno;
    close(report[0]);
    close(report[1]);
    *failed_step = "fork";
    return saved;
  }
  if (child == 0) run_child(request, parent, report[1]);

  close(report[1]);
  int payload[2];
  ssize_t got;
  do {
    got = read(report[0], payload, sizeof payload);
  } while (got < 0 && errno == EINTR);
  close(report[0]);
  if (got == (ssize_t)sizeof payload) {
    waitpid(child, NULL, 0);
    int step = payload[0];
    *failed_step = step >= 0 && step <= STEP_EXEC ? spawn_steps[step] : "spawn";
    return payload[1];
  }
  int fd = (int)syscall(SYS_pidfd_open, child, 0);
  if (fd < 0) {
    int saved = errno;
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    *failed_step = "pidfd_open";
    return saved;
  }
  fcntl(fd, F_SETFD, FD_CLOEXEC);
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
