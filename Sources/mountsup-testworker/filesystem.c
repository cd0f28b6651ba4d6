// mountsup-testworker: the file system it serves, and the misbehaviour asked of its answers.
#include "testworker.h"

/// Set once --hang-on's name was looked up.
static volatile int hang_now;

/// Called before every answer: --slow waits; once --hang-after is due, or --hang-on's name was
/// looked up, it never returns.
void before_answer(void) {
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

const struct fuse_lowlevel_ops operations = {
    .init = worker_init,
    .destroy = worker_destroy,
    .lookup = worker_lookup,
    .getattr = worker_getattr,
    .readdir = worker_readdir,
    .open = worker_open,
    .read = worker_read,
    .statfs = worker_statfs,
};
