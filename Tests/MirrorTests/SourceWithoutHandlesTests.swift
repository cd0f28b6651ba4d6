import Foundation
import Glibc
import Testing

/// A SOURCE whose file system gives no file handles (overlayfs without `nfs_export`, as in a
/// container's root): the mirror serves it all the same; only a successor could not reopen its
/// files after a crash.
@Suite struct SourceWithoutHandlesTests {
  @Test func anOverlaySourceIsServed() throws {
    try withMirror(prepare: { scratch in
      let lower = try scratch.directory("lower")
      try scratch.directory("upper")
      try scratch.directory("work")
      try "from the lower layer\n".write(toFile: lower + "/file", atomically: true, encoding: .utf8)
      let options =
        "lowerdir=\(lower),upperdir=\(scratch.path("upper")),workdir=\(scratch.path("work"))"
      guard mount("overlay", scratch.path("src"), "overlay", 0, options) == 0 else {
        throw HarnessError("mount overlay: \(String(cString: strerror(errno)))")
      }
    }) { mirror, scratch in
      defer { umount2(scratch.path("src"), Int32(MNT_DETACH)) }
      #expect(try readFile(scratch.path("mnt/file")) == "from the lower layer\n")
      try "written\n".write(toFile: scratch.path("mnt/new"), atomically: false, encoding: .utf8)
      #expect(try readFile(scratch.path("upper/new")) == "written\n")
      #expect(
        try FileManager.default.contentsOfDirectory(atPath: scratch.path("mnt")).sorted() == [
          "file", "new",
        ])
    }
  }
}
