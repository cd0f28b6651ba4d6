#define _GNU_SOURCE
#include "CLinuxSupport.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

ssize_t mountsup_receive_with_fds(int fd, void *buffer, size_t length, int *fds, int capacity,
                                  int *count) {
  union {
    struct cmsghdr header;
    char space[CMSG_SPACE(sizeof(int) * 8)];
  } control;
  struct iovec iov = {.iov_base = buffer, .iov_len = length};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.space,
                       .msg_controllen = sizeof control.space};
  ssize_t got;
  do {
    got = recvmsg(fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  } while (got < 0 && errno == EINTR);
  *count = 0;
  if (got < 0) return -1;
  for (struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg); cmsg; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
    if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS) continue;
    size_t n = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < n; i++) {
      int received;
      memcpy(&received, CMSG_DATA(cmsg) + i * sizeof(int), sizeof received);
      if (*count < capacity)
        fds[(*count)++] = received;
      else
        close(received);
    }
  }
  return got;
}

int mountsup_send_with_fds(int fd, const void *buffer, size_t length, const int *fds, int count) {
  if (count < 0 || count > 8) return EINVAL;
  union {
    struct cmsghdr header;
    char space[CMSG_SPACE(sizeof(int) * 8)];
  } control;
  memset(&control, 0, sizeof control);
  struct iovec iov = {.iov_base = (void *)buffer, .iov_len = length};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
  if (count > 0) {
    msg.msg_control = control.space;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)count);
    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)count);
    memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * (size_t)count);
  }
  ssize_t sent;
  do {
    sent = sendmsg(fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
  } while (sent < 0 && errno == EINTR);
  return sent < 0 ? errno : 0;
}
