import Glibc
import Testing

/// A root worker serving other users: the kernel enforces SOURCE's modes (default_permissions),
/// and what another user creates belongs to that user.
@Suite("mountsup-mirror permissions for other users")
struct PermissionTests {
  static func prepare(_ scratch: Scratch) throws {
    let src = scratch.path("src")
    try writeFile(src + "/private", "secret")
    chmod(src + "/private", 0o600)
    try writeFile(src + "/public", "open")
    chmod(src + "/public", 0o644)
    try scratch.directory("src/rootonly")
    try scratch.directory("src/nobodys")
    chown(src + "/nobodys", 65534, 65534)
    try scratch.directory("src/sticky")
    chmod(src + "/sticky", 0o1777)
    try writeFile(src + "/sticky/roots", "r")
    try scratch.directory("src/setgid")
    chown(src + "/setgid", 0, 4321)
    chmod(src + "/setgid", 0o2777)
  }

  @Test("allow_other: EACCES and EPERM where the modes say so, success elsewhere")
  func deniedAndAllowed() throws {
    try withMirror(options: ["allow_other"], prepare: PermissionTests.prepare) {
      (mirror, _) throws in
      func asNobody(_ script: String) throws -> ShellResult {
        try shell(script, in: mirror.mountpoint, asNobody: true)
      }
      let secret = try asNobody("cat private")
      #expect(secret.status != 0)
      #expect(secret.output.contains("Permission denied"))
      #expect(try asNobody("cat public").output == "open")
      #expect(try asNobody("echo x >> public").output.contains("Permission denied"))
      #expect(try asNobody("touch rootonly/new").output.contains("Permission denied"))
      #expect(try asNobody("mkdir rootonly/new").output.contains("Permission denied"))
      #expect(try asNobody("chmod 666 public").output.contains("Operation not permitted"))
      #expect(try asNobody("chown 65534 public").output.contains("Operation not permitted"))
      #expect(try asNobody("rm sticky/roots").output.contains("Operation not permitted"))
      #expect(try asNobody("mv public nobodys/").output.contains("Permission denied"))
      #expect(try asNobody("ls rootonly && echo listed").output == "listed\n")
    }
  }

  @Test(
    "files another user creates belong to that user, and set-group-id directories keep their group")
  func ownershipOfNewFiles() throws {
    try withMirror(options: ["allow_other"], prepare: PermissionTests.prepare) {
      (mirror, scratch) throws in
      let script = """
        set -e
        echo mine > nobodys/file
        mkdir nobodys/dir
        ln -s file nobodys/link
        mkfifo nobodys/fifo
        echo group > setgid/file
        mkdir setgid/dir
        echo made
        """
      let result = try shell(script, in: mirror.mountpoint, asNobody: true)
      #expect(result.status == 0, "\(result.output)")
      let src = scratch.path("src")
      for name in ["file", "dir", "link", "fifo"] {
        let attributes = try lstatOf(src + "/nobodys/" + name)
        #expect(attributes.st_uid == 65534, "uid of \(name)")
        #expect(attributes.st_gid == 65534, "gid of \(name)")
      }
      #expect(try lstatOf(src + "/setgid/file").st_uid == 65534)
      #expect(try lstatOf(src + "/setgid/file").st_gid == 4321)
      #expect(try lstatOf(src + "/setgid/dir").st_gid == 4321)
      #expect(try lstatOf(src + "/setgid/dir").st_mode & S_ISGID != 0)
      // Root's own files stay root's.
      try writeFile(mirror.mountpoint + "/by-root", "r")
      #expect(try lstatOf(src + "/by-root").st_uid == 0)
      // umask of the creator applies.
      let masked = try shell(
        "umask 077 && touch nobodys/masked", in: mirror.mountpoint, asNobody: true)
      #expect(masked.status == 0)
      #expect(try lstatOf(src + "/nobodys/masked").st_mode & 0o777 == 0o600)
    }
  }

  @Test("without allow_other, other users cannot enter the mount at all")
  func onlyOwner() throws {
    try withMirror(prepare: PermissionTests.prepare) { (mirror, _) throws in
      let listing = try shell("ls \(mirror.mountpoint)", in: "/", asNobody: true)
      #expect(listing.status != 0)
      #expect(listing.output.contains("Permission denied"))
    }
  }
}
