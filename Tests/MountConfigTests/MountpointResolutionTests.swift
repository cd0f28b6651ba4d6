import Foundation
import Testing

@testable import MountConfig

/// Mountpoints are resolved through the symlinks of their existing part: the kernel shows a mount
/// at its real path, and two spellings of one directory are one mountpoint.
@Suite struct MountpointResolution {
  /// A temporary directory by its real path (its parents may be symlinks themselves).
  private func withRealDirectory(_ body: (String) throws -> Void) throws {
    try withTemporaryDirectory { directory in
      let real = try #require(realpath(directory, nil))
      defer { free(real) }
      try body(String(cString: real))
    }
  }

  private func mount(_ name: String, at mountpoint: String, _ extra: String = "") -> String {
    """
    [mounts.\(name)]
    mountpoint = \(tomlQuoted(mountpoint))
    command = ["w", "{mountpoint}"]
    environment = { WHERE = "{mountpoint}" }
    \(extra)

    """
  }

  @Test func aSymlinkOnTheWayIsResolvedAndTheRestKeptAsWritten() throws {
    try withRealDirectory { directory in
      try FileManager.default.createDirectory(
        atPath: directory + "/r/real", withIntermediateDirectories: true)
      #expect(symlink("real", directory + "/r/link") == 0)
      let configuration = try parse(mount("x", at: directory + "/r/link/x/y"))
      let spec = try #require(configuration.mounts.first)
      #expect(spec.mountpoint == directory + "/r/real/x/y")
      #expect(spec.mountpointAsWritten == directory + "/r/link/x/y")
      #expect(spec.command == ["w", directory + "/r/real/x/y"], "{mountpoint} is the real path")
      #expect(spec.environment["WHERE"] == directory + "/r/real/x/y")

      let rendered = configuration.renderResolved()
      #expect(rendered.contains("mountpoint           = \"\(directory)/r/real/x/y\""))
      #expect(
        rendered.contains(
          "# mountpoint written as \"\(directory)/r/link/x/y\", resolved through symlinks"))
    }
  }

  @Test func relativeAbsoluteAndDanglingSymlinks() throws {
    try withRealDirectory { directory in
      let manager = FileManager.default
      try manager.createDirectory(atPath: directory + "/a", withIntermediateDirectories: true)
      try manager.createDirectory(atPath: directory + "/b", withIntermediateDirectories: true)
      #expect(symlink("../b", directory + "/a/up") == 0)
      #expect(symlink(directory + "/b", directory + "/absolute") == 0)
      #expect(symlink("nowhere/deep", directory + "/dangling") == 0)
      #expect(symlink("../../gone/../b2", directory + "/a/twice") == 0)
      let configuration = try parse(
        mount("up", at: directory + "/a/up/x")
          + mount("absolute", at: directory + "/absolute/y")
          + mount("dangling", at: directory + "/dangling")
          + mount("twice", at: directory + "/a/twice/z")
          + mount("plain", at: directory + "/a/new"))
      let mountpoints = Dictionary(
        uniqueKeysWithValues: configuration.mounts.map { ($0.name, $0.mountpoint) })
      #expect(mountpoints["up"] == directory + "/b/x")
      #expect(mountpoints["absolute"] == directory + "/b/y")
      #expect(mountpoints["dangling"] == directory + "/nowhere/deep", "created there later")
      #expect(mountpoints["twice"] == (directory as NSString).deletingLastPathComponent + "/b2/z")
      #expect(mountpoints["plain"] == directory + "/a/new")
      #expect(configuration.mounts.first { $0.name == "plain" }?.mountpointAsWritten == nil)
    }
  }

  @Test func varRunIsRun() throws {
    guard symlinkTarget("/var/run") != nil else { return }  // not a symlink here
    let configuration = try parse(mount("x", at: "/var/run/mountsup-test-x"))
    #expect(configuration.mounts.first?.mountpoint == "/run/mountsup-test-x")
  }

  @Test func twoSpellingsOfOneDirectoryAreADuplicate() throws {
    try withRealDirectory { directory in
      try FileManager.default.createDirectory(
        atPath: directory + "/r/real", withIntermediateDirectories: true)
      #expect(symlink("real", directory + "/r/link") == 0)
      expectConfigError(
        mount("alpha", at: directory + "/r/real/x") + mount("beta", at: directory + "/r/link/x"),
        code: .duplicateMountpoint, mount: "beta", key: "mountpoint",
        mentions: [
          "\"\(directory)/r/real/x\" is already the mountpoint of mount \"alpha\"",
          "written \"\(directory)/r/link/x\" here and \"\(directory)/r/real/x\" there",
        ])
    }
  }

  @Test func aSymlinkLoopIsAnError() throws {
    try withRealDirectory { directory in
      #expect(symlink("loop2", directory + "/loop1") == 0)
      #expect(symlink("loop1", directory + "/loop2") == 0)
      expectConfigError(
        mount("x", at: directory + "/loop1/x"), code: .invalidPath, mount: "x", key: "mountpoint",
        mentions: ["too many levels of symbolic links"])
    }
  }

  @Test func aMountpointThatIsAFileOrLiesUnderOneIsAnError() throws {
    try withRealDirectory { directory in
      try write("", to: "file", in: directory)
      #expect(symlink("file", directory + "/to-file") == 0)
      expectConfigError(
        mount("x", at: directory + "/file"), code: .invalidPath, mount: "x", key: "mountpoint",
        mentions: ["\"\(directory)/file\" is a regular file, not a directory"])
      expectConfigError(
        mount("x", at: directory + "/to-file"), code: .invalidPath, mount: "x", key: "mountpoint",
        mentions: ["(resolved: \"\(directory)/file\") is a regular file, not a directory"])
      expectConfigError(
        mount("x", at: directory + "/file/deeper/x"), code: .invalidPath, mount: "x",
        key: "mountpoint",
        mentions: ["lies under \"\(directory)/file\", which is a regular file, not a directory"])
      expectConfigError(
        mount("x", at: "/dev/null/x"), code: .invalidPath, mount: "x", key: "mountpoint",
        mentions: ["lies under \"/dev/null\", which is a character device"])
    }
  }

  @Test func theWalkStopsAtAFUSEMount() throws {
    try withRealDirectory { directory in
      // A regular file stands in for a FUSE mount here: were it looked at, it would be an error.
      try write("", to: "fuse", in: directory)
      let context = LoadContext(
        resolver: MountpointResolver(fuseMountpoints: [directory + "/fuse"]))
      let configuration = try ConfigLoader.parse(
        toml: mount("inner", at: directory + "/fuse/inner/x"), file: mainFile, baseDirectory: nil,
        context: context)
      #expect(configuration.mounts.first?.mountpoint == directory + "/fuse/inner/x")
    }
  }

  @Test func mountinfoEscapesAreUndone() {
    #expect(unescapeMountinfoField(Array("/mnt/a\\040b\\011c\\134d".utf8)[...]) == "/mnt/a b\tc\\d")
    #expect(unescapeMountinfoField(Array("/mnt/plain".utf8)[...]) == "/mnt/plain")
  }
}
