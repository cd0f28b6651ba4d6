import MountCore
import Testing

@Suite("FailureReason: the most useful line of a worker's last output")
struct FailureReasonTests {
  @Test("sshfs: the refusal that explains it, not the reset that follows")
  func sshfsConnectionRefused() {
    let tail = [
      "ssh: connect to host backup.example port 22: Connection refused",
      "read: Connection reset by peer",
    ]
    #expect(
      FailureReason.pick(from: tail)
        == "ssh: connect to host backup.example port 22: Connection refused")
  }

  @Test("a wrapper: the exec that was not found, not its spam afterwards")
  func wrapperNotFound() {
    let tail = [
      "starting the wrapper",
      "exec: mountsup-mirror: not found",
      "spam spam spam",
      "spam spam spam",
      "",
    ]
    #expect(FailureReason.pick(from: tail) == "exec: mountsup-mirror: not found")
  }

  @Test(
    "each kind of telling line beats a later line that tells nothing",
    arguments: [
      "fuse: bad mount point `/mnt/x': No such file or directory",
      "fusermount3: failed to open /dev/fuse: Permission denied",
      "mount failed",
      "error: the backend said no",
      "cannot open the cache directory",
      "open /etc/rclone.conf: permission denied",
      "Connection refused",
    ])
  func tellingBeatsChatter(_ telling: String) {
    #expect(FailureReason.pick(from: [telling, "bye", "  "]) == telling)
  }

  @Test("a cause beats a later failure that does not say why")
  func causeBeatsBareFailure() {
    let tail = ["open /srv/data: No such file or directory", "mount failed"]
    #expect(FailureReason.pick(from: tail) == "open /srv/data: No such file or directory")
  }

  @Test("among equally telling lines, the last one")
  func laterOfEquals() {
    let tail = ["error: first", "error: second", "spam"]
    #expect(FailureReason.pick(from: tail) == "error: second")
    let causes = ["host a: Connection refused", "host b: Connection refused"]
    #expect(FailureReason.pick(from: causes) == "host b: Connection refused")
  }

  @Test("warnings, notices and debug lines that mention errors do not win")
  func chatterWithErrorWords() {
    let tail = [
      "2024/05/01 10:00:00 CRITICAL: Fatal error: didn't find section in config file",
      "2024/05/01 10:00:01 NOTICE: retrying after error",
      "warning: could not write the cache, continuing",
      "debug1: connection refused by agent",
    ]
    #expect(
      FailureReason.pick(from: tail)
        == "2024/05/01 10:00:00 CRITICAL: Fatal error: didn't find section in config file")
  }

  @Test("a fatal line beats an ordinary one of the same kind")
  func fatalFirst() {
    let tail = ["fatal: cannot mount: invalid option", "invalid argument ignored"]
    #expect(FailureReason.pick(from: tail) == "fatal: cannot mount: invalid option")
  }

  @Test("nothing telling: the last non-blank line, trimmed; nothing at all: nil")
  func fallback() {
    #expect(FailureReason.pick(from: ["hello", "  goodbye \t", "", "   "]) == "goodbye")
    #expect(FailureReason.pick(from: []) == nil)
    #expect(FailureReason.pick(from: ["", " ", "\t"]) == nil)
  }
}
