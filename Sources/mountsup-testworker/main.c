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
#include "testworker.h"

struct testworker_options options = {.spew_line_length = 100, .hang_after_ms = -1};
struct timespec hang_at;
int notify_fd = -1;
char hello_text[512];
volatile int session_ended;

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
