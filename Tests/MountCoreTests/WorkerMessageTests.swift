import MountConfig
import Testing

@testable import MountCore

@Suite("WorkerMessage parsing")
struct WorkerMessageTests {
  @Test("a datagram that is only a newline is READY (s6 convention)")
  func bareNewlineIsReady() {
    let message = WorkerMessage(datagram: [UInt8(ascii: "\n")])
    #expect(message == WorkerMessage(ready: true))
  }

  @Test(
    "READY is set only by READY=1",
    arguments: [
      ("READY=1", true), ("READY=1\n", true), ("READY=0", false), ("READY=true", false),
      ("READY=", false), ("READY=11", false), ("ready=1", false), (" READY=1", false),
    ])
  func readyValues(text: String, ready: Bool) {
    #expect(datagram(text).ready == ready)
  }

  @Test("several keys in one datagram, sd_notify style")
  func severalKeys() {
    let message = datagram(
      "READY=1\nSTATUS=Serving 3 files\nERRNO=5\nERROR=disk on fire\nSTOPPING=1\n")
    #expect(
      message
        == WorkerMessage(
          ready: true, stopping: true, status: "Serving 3 files", errorText: "disk on fire",
          errno: 5))
    #expect(!message.isEmpty)
  }

  @Test("a value keeps everything after the first '=' and its spaces")
  func valueWithEquals() {
    let message = datagram("STATUS=a=b = c \nERROR= x=1")
    #expect(message.status == "a=b = c ")
    #expect(message.errorText == " x=1")
  }

  @Test("an empty STATUS is a status (cleared text), not absent")
  func emptyStatus() {
    #expect(datagram("STATUS=").status == "")
  }

  @Test(
    "ERRNO is a decimal number, spaces around it allowed",
    arguments: [
      ("ERRNO=5", Int32(5)), ("ERRNO= 13 ", 13), ("ERRNO=0", 0), ("ERRNO=abc", nil),
      ("ERRNO=", nil),
      ("ERRNO=99999999999", nil), ("ERRNO=5x", nil),
    ] as [(String, Int32?)])
  func errnoValues(text: String, errno: Int32?) {
    #expect(datagram(text).errno == errno)
  }

  @Test("an unparsable ERRNO does not wipe an earlier one in the same datagram")
  func badErrnoKeepsEarlier() {
    #expect(datagram("ERRNO=5\nERRNO=junk").errno == 5)
    #expect(datagram("ERRNO=5\nERRNO=7").errno == 7)
  }

  @Test("the last STATUS and ERROR of a datagram win; READY=0 after READY=1 does not unset it")
  func lastValueWins() {
    let message = datagram("STATUS=one\nREADY=1\nSTATUS=two\nERROR=a\nERROR=b\nREADY=0\nSTOPPING=0")
    #expect(message.status == "two")
    #expect(message.errorText == "b")
    #expect(message.ready)
    #expect(!message.stopping)
  }

  @Test(
    "garbage, unknown keys and lines without '=' are ignored",
    arguments: [
      "", "hello world", "\n\n", "\n\n\n", "WATCHDOG=1", "MAINPID=42\nFDSTORE=1", "READY", "=1",
      "STATUS", "\r\n", "\u{0}\u{1}\u{2}",
    ])
  func garbageIsEmpty(text: String) {
    #expect(datagram(text).isEmpty)
  }

  @Test("invalid UTF-8 does not crash the parser and is not READY")
  func invalidUTF8() {
    let message = WorkerMessage(datagram: [0xFF, 0xFE, 0x0A, 0xC3])
    #expect(message.isEmpty)
    let mixed = WorkerMessage(
      datagram: Array("STATUS=ok\n".utf8) + [0xFF] + Array("\nREADY=1".utf8))
    #expect(mixed.ready)
    #expect(mixed.status == "ok")
  }

  @Test("unknown keys next to known ones do not disturb them")
  func unknownBesideKnown() {
    #expect(
      datagram("X_CUSTOM=1\nREADY=1\nnonsense\nSTATUS=up")
        == WorkerMessage(ready: true, status: "up"))
  }

  @Test("a newline after other bytes is not the s6 READY")
  func newlineAfterText() {
    #expect(!datagram(" \n").ready)
    #expect(!datagram("\n\n").ready)
  }
}

@Suite("Small value types")
struct ValueTypeTests {
  @Test("exit status descriptions name the code or the signal")
  func exitStatusDescription() {
    #expect(ExitStatus.exited(3).description == "exited with status 3")
    #expect(ExitStatus.signaled(9).description == "killed by signal 9 (SIGKILL)")
    #expect(ExitStatus.signaled(15).description == "killed by signal 15 (SIGTERM)")
    #expect(ExitStatus.exited(0).isSuccess)
    #expect(!ExitStatus.exited(1).isSuccess)
    #expect(!ExitStatus.signaled(0).isSuccess)
  }

  @Test("a failure shows the worker's own words after the summary")
  func failureDescription() {
    #expect(Failure(summary: "exited with status 1").description == "exited with status 1")
    #expect(Failure(summary: "exited", workerError: "").description == "exited")
    #expect(
      Failure(summary: "exited", workerError: "no such share").description
        == "exited: no such share")
  }

  @Test("monotonic instants add and subtract durations, saturating instead of trapping")
  func instantArithmetic() {
    let base = MonotonicInstant(nanoseconds: 10_000_000_000)
    #expect((base + .milliseconds(1500)).nanoseconds == 11_500_000_000)
    #expect((base + .seconds(-2)).nanoseconds == 8_000_000_000)
    #expect((base + .milliseconds(1500)) - base == .milliseconds(1500))
    #expect(base - (base + .seconds(3)) == .seconds(-3))
    #expect(base < base + .nanoseconds(1))
    #expect(Duration.seconds(Int64.max).nanosecondsClamped == .max)
    #expect(Duration.milliseconds(2500).milliseconds == 2500)
  }

  @Test(
    "durations in messages",
    arguments: [
      (Duration.milliseconds(100), "100ms"), (.zero, "0s"), (.seconds(10), "10s"),
      (.milliseconds(1500), "1.5s"),
      (.seconds(90), "1m30s"),
    ])
  func durationFormat(duration: Duration, text: String) {
    #expect(formatDuration(duration) == text)
  }
}
