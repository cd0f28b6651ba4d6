import Glibc
import Testing

/// The worker protocol as mountsupd sees it: a socketpair as fd 3, datagrams in sd_notify syntax.
@Suite("Readiness protocol of mountsup-mirror")
struct ReadinessTests {
  @Test("READY=1 arrives only once the mount is in mountinfo, and it serves")
  func readyAfterMount() throws {
    let scratch = try Scratch()
    defer { scratch.remove() }
    let source = try scratch.directory("src")
    let mountpoint = try scratch.directory("mnt")
    try writeFile(source + "/hello", "hi\n")
    #expect(fuseMount(at: mountpoint) == nil)

    let mirror = try MirrorProcess(source: source, mountpoint: mountpoint)
    defer { mirror.stopAndClean() }
    let message = mirror.nextMessage()
    // Checked the moment READY is read: the mount must already be there.
    let entry = fuseMount(at: mountpoint)
    #expect(message == .message("READY=1"))
    #expect(entry?.type == "fuse.mountsup-mirror")
    #expect(entry?.source == "mountsup-mirror:\(source)")
    #expect(try readFile(mountpoint + "/hello") == "hi\n")
  }

  @Test("a missing SOURCE is reported as ERROR= and ERRNO=, then exit 1")
  func missingSource() throws {
    let scratch = try Scratch()
    defer { scratch.remove() }
    let mountpoint = try scratch.directory("mnt")
    let missing = scratch.path("absent")
    let mirror = try MirrorProcess(source: missing, mountpoint: mountpoint)
    defer { mirror.stopAndClean() }

    let message = mirror.nextMessage()
    #expect(message == .message("ERROR=source \(missing): No such file or directory\nERRNO=2"))
    #expect(mirror.nextMessage() == .endOfFile)
    #expect(try mirror.child.exitCode() == 1)
    #expect(mirror.child.text.contains("source \(missing): No such file or directory"))
    #expect(fuseMount(at: mountpoint) == nil)
  }

  @Test("a SOURCE that is a file is reported with ENOTDIR")
  func sourceNotDirectory() throws {
    let scratch = try Scratch()
    defer { scratch.remove() }
    let mountpoint = try scratch.directory("mnt")
    let file = scratch.path("file")
    try writeFile(file, "x")
    let mirror = try MirrorProcess(source: file, mountpoint: mountpoint)
    defer { mirror.stopAndClean() }
    #expect(mirror.nextMessage() == .message("ERROR=source \(file): Not a directory\nERRNO=20"))
    #expect(try mirror.child.exitCode() == 1)
  }

  @Test("a missing mountpoint is reported with ENOENT")
  func missingMountpoint() throws {
    let scratch = try Scratch()
    defer { scratch.remove() }
    let source = try scratch.directory("src")
    let missing = scratch.path("nowhere")
    let mirror = try MirrorProcess(source: source, mountpoint: missing)
    defer { mirror.stopAndClean() }
    #expect(
      mirror.nextMessage()
        == .message("ERROR=mountpoint \(missing): No such file or directory\nERRNO=2"))
    #expect(try mirror.child.exitCode() == 1)
  }

  @Test("an unknown -o option is reported before anything is mounted")
  func badOption() throws {
    let scratch = try Scratch()
    defer { scratch.remove() }
    let source = try scratch.directory("src")
    let mountpoint = try scratch.directory("mnt")
    let mirror = try MirrorProcess(source: source, mountpoint: mountpoint, options: ["ro,bogus=1"])
    defer { mirror.stopAndClean() }
    guard case .message(let text) = mirror.nextMessage() else {
      Issue.record("no message")
      return
    }
    #expect(text.hasPrefix("ERROR="))
    #expect(text.contains("unknown mount option 'bogus=1'"))
    #expect(text.hasSuffix("\nERRNO=22"))
    #expect(try mirror.child.exitCode() != 0)
    #expect(fuseMount(at: mountpoint) == nil)
  }

  @Test("a stale mount of a killed worker makes the next start fail with ENOTCONN")
  func staleMountpoint() throws {
    let scratch = try Scratch()
    defer { scratch.remove() }
    let source = try scratch.directory("src")
    let mountpoint = try scratch.directory("mnt")
    let first = try MirrorProcess(source: source, mountpoint: mountpoint)
    defer { first.stopAndClean() }
    try first.waitReady()
    #expect(try first.stop(signal: SIGKILL) == 128 + SIGKILL)
    #expect(fuseMount(at: mountpoint) != nil)

    let second = try MirrorProcess(source: source, mountpoint: mountpoint)
    defer { second.stopAndClean() }
    #expect(
      second.nextMessage()
        == .message(
          "ERROR=mountpoint \(mountpoint): Transport endpoint is not connected\nERRNO=107"))
    #expect(try second.child.exitCode() == 1)
  }

  @Test("SIGTERM and SIGINT unmount, send STOPPING=1 and exit 0", arguments: [SIGTERM, SIGINT])
  func stopBySignal(signal: Int32) throws {
    try withMirror { (mirror, _) throws in
      let status = try mirror.stop(signal: signal)
      #expect(status == 0)
      #expect(mirror.nextMessage() == .message("STOPPING=1"))
      #expect(mirror.nextMessage() == .endOfFile)
      #expect(fuseMount(at: mirror.mountpoint) == nil)
    }
  }

  @Test("an unmount from outside ends the worker with STOPPING=1 and exit 0")
  func stopByUnmount() throws {
    try withMirror { (mirror, _) throws in
      #expect(umount2(mirror.mountpoint, 0) == 0)
      let status = try mirror.child.exitCode(timeout: 20)
      #expect(status == 0)
      #expect(mirror.nextMessage() == .message("STOPPING=1"))
      #expect(mirror.nextMessage() == .endOfFile)
    }
  }

  @Test("standalone (no MOUNTSUP_NOTIFY_FD): mounts, serves, stops on SIGINT with exit 0")
  func standalone() throws {
    try withMirror(supervised: false) { (mirror, scratch) throws in
      try writeFile(mirror.mountpoint + "/made-here", "standalone\n")
      #expect(try readFile(scratch.path("src/made-here")) == "standalone\n")
      #expect(try mirror.stop(signal: SIGINT) == 0)
      #expect(fuseMount(at: mirror.mountpoint) == nil)
    }
  }

  @Test("-f is accepted and --help exits 0")
  func commandLine() throws {
    try withMirror(supervised: false) { (mirror, scratch) throws in
      let second = try scratch.directory("mnt2")
      let foreground = try MirrorProcess(
        source: scratch.path("src"), mountpoint: second, supervised: false, extraArguments: ["-f"])
      defer { foreground.stopAndClean() }
      try foreground.waitReady()
      #expect(try foreground.stop() == 0)
    }
    let help = try Child([MirrorProcess.executable, "--help"], environment: [:])
    #expect(try help.exitCode() == 0)
    #expect(help.text.contains("USAGE: mountsup-mirror <source> <mountpoint>"))
    #expect(help.text.contains("allow_other"))
  }
}
