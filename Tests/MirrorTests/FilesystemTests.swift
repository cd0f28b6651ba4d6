import CMountWorkerKitSupport
import Glibc
import Testing

/// Syscall semantics through the mirror: every result and errno as on SOURCE, and every change
/// visible in SOURCE.
@Suite("mountsup-mirror file operations")
struct FilesystemTests {
  @Test("rename, rename over a file, RENAME_NOREPLACE and RENAME_EXCHANGE")
  func renames() throws {
    try withMirror { (mirror, scratch) throws in
      let m = mirror.mountpoint
      let src = scratch.path("src")
      try writeFile(m + "/a", "A")
      try writeFile(m + "/b", "B")

      #expect(rename(m + "/a", m + "/c") == 0)
      #expect(try readFile(m + "/c") == "A")
      #expect(throws: ErrnoError(ENOENT)) { try lstatOf(m + "/a") }
      #expect(throws: ErrnoError(ENOENT)) { try lstatOf(src + "/a") }
      #expect(try readFile(src + "/c") == "A")

      #expect(rename(m + "/c", m + "/b") == 0)  // replaces b
      #expect(try readFile(m + "/b") == "A")
      try writeFile(m + "/c", "C")

      let noReplace = errnoOf {
        Int(mwk_renameat2(AT_FDCWD, m + "/c", AT_FDCWD, m + "/b", UInt32(MWK_RENAME_NOREPLACE)))
      }
      #expect(noReplace == EEXIST)
      #expect(try readFile(m + "/b") == "A")
      #expect(
        mwk_renameat2(AT_FDCWD, m + "/c", AT_FDCWD, m + "/d", UInt32(MWK_RENAME_NOREPLACE)) == 0)
      #expect(try readFile(src + "/d") == "C")

      #expect(
        mwk_renameat2(AT_FDCWD, m + "/b", AT_FDCWD, m + "/d", UInt32(MWK_RENAME_EXCHANGE)) == 0)
      #expect(try readFile(m + "/b") == "C")
      #expect(try readFile(m + "/d") == "A")
      #expect(try readFile(src + "/b") == "C")
      #expect(try readFile(src + "/d") == "A")
      let exchangeMissing = errnoOf {
        Int(mwk_renameat2(AT_FDCWD, m + "/b", AT_FDCWD, m + "/zz", UInt32(MWK_RENAME_EXCHANGE)))
      }
      #expect(exchangeMissing == ENOENT)

      #expect(mkdir(m + "/dir1", 0o755) == 0)
      #expect(mkdir(m + "/dir2", 0o755) == 0)
      try writeFile(m + "/dir2/inside", "x")
      #expect(errnoOf { Int(rename(m + "/dir1", m + "/dir2")) } == ENOTEMPTY)
      #expect(errnoOf { Int(rename(m + "/b", m + "/dir1")) } == EISDIR)
      #expect(errnoOf { Int(rename(m + "/dir1", m + "/b")) } == ENOTDIR)
      #expect(errnoOf { Int(rename(m + "/dir2", m + "/dir2/sub")) } == EINVAL)
      #expect(rename(m + "/dir2", m + "/dir1") == 0)  // over an empty directory
      #expect(try readFile(src + "/dir1/inside") == "x")
    }
  }

  @Test("an open file keeps working across rename and unlink of its name")
  func openAcrossRename() throws {
    try withMirror { (mirror, scratch) throws in
      let m = mirror.mountpoint
      try writeFile(m + "/moving", "one")
      let descriptor = open(m + "/moving", O_RDWR | O_APPEND)
      #expect(descriptor >= 0)
      defer { close(descriptor) }
      #expect(rename(m + "/moving", m + "/moved") == 0)
      #expect(write(descriptor, "two", 3) == 3)
      #expect(try readFile(scratch.path("src/moved")) == "onetwo")
      #expect(unlink(m + "/moved") == 0)
      #expect(write(descriptor, "three", 5) == 5)
      var attributes = stat()
      #expect(fstat(descriptor, &attributes) == 0)
      #expect(attributes.st_size == 11)
      #expect(attributes.st_nlink == 0)
    }
  }

  @Test("hard links share one inode, in the mount and in SOURCE")
  func hardLinks() throws {
    try withMirror { (mirror, scratch) throws in
      let m = mirror.mountpoint
      try writeFile(m + "/original", "linked")
      #expect(link(m + "/original", m + "/second") == 0)
      let first = try lstatOf(m + "/original")
      let second = try lstatOf(m + "/second")
      #expect(first.st_ino == second.st_ino)
      #expect(second.st_nlink == 2)
      #expect(try lstatOf(scratch.path("src/second")).st_nlink == 2)
      try writeFile(m + "/second", "changed")
      #expect(try readFile(m + "/original") == "changed")
      #expect(errnoOf { Int(link(m + "/original", m + "/second")) } == EEXIST)
      #expect(mkdir(m + "/d", 0o755) == 0)
      #expect(errnoOf { Int(link(m + "/d", m + "/d2")) } == EPERM)
      #expect(unlink(m + "/original") == 0)
      #expect(try readFile(m + "/second") == "changed")
      #expect(try lstatOf(m + "/second").st_nlink == 1)
    }
  }

  @Test("symlinks: create, readlink, follow, dangling, utimens without following")
  func symlinks() throws {
    try withMirror { (mirror, scratch) throws in
      let m = mirror.mountpoint
      try writeFile(m + "/target", "pointed at")
      #expect(symlink("target", m + "/link") == 0)
      #expect(symlink("nowhere/at/all", m + "/dangling") == 0)
      #expect(try readFile(m + "/link") == "pointed at")
      #expect(try lstatOf(m + "/link").st_mode & S_IFMT == S_IFLNK)
      #expect(try lstatOf(scratch.path("src/link")).st_mode & S_IFMT == S_IFLNK)
      #expect(readLink(m + "/link") == "target")
      #expect(readLink(scratch.path("src/dangling")) == "nowhere/at/all")
      var attributes = stat()
      #expect(errnoOf { Int(stat(m + "/dangling", &attributes)) } == ENOENT)
      var byte: CChar = 0
      #expect(errnoOf { Int(readlink(m + "/target", &byte, 1)) } == EINVAL)

      let times = [
        timespec(tv_sec: 1_000_000, tv_nsec: 0), timespec(tv_sec: 2_000_000, tv_nsec: 0),
      ]
      #expect(utimensat(AT_FDCWD, m + "/link", times, AT_SYMLINK_NOFOLLOW) == 0)
      #expect(try lstatOf(scratch.path("src/link")).st_mtim.tv_sec == 2_000_000)
      #expect(try lstatOf(scratch.path("src/target")).st_mtim.tv_sec != 2_000_000)
    }
  }

  @Test("extended attributes: set, size query, get, list, ERANGE, XATTR_CREATE, remove")
  func extendedAttributes() throws {
    try withMirror { (mirror, scratch) throws in
      let m = mirror.mountpoint
      let file = m + "/tagged"
      try writeFile(file, "x")
      #expect(setxattr(file, "user.colour", "purple", 6, 0) == 0)
      #expect(getxattr(file, "user.colour", nil, 0) == 6)
      var buffer = [CChar](repeating: 0, count: 64)
      #expect(getxattr(file, "user.colour", &buffer, 64) == 6)
      #expect(String(decoding: buffer[..<6].map { UInt8($0) }, as: UTF8.self) == "purple")
      #expect(errnoOf { getxattr(file, "user.colour", &buffer, 3) } == ERANGE)
      #expect(
        errnoOf { Int(setxattr(file, "user.colour", "red", 3, Int32(XATTR_CREATE))) } == EEXIST)
      #expect(
        errnoOf { Int(setxattr(file, "user.absent", "red", 3, Int32(XATTR_REPLACE))) } == ENODATA)
      #expect(setxattr(file, "user.shape", "round", 5, Int32(XATTR_CREATE)) == 0)

      let listSize = listxattr(file, nil, 0)
      var names = [CChar](repeating: 0, count: max(listSize, 1))
      #expect(listxattr(file, &names, names.count) == listSize)
      let list = names.split(separator: 0).map {
        String(decoding: $0.map { UInt8($0) }, as: UTF8.self)
      }
      #expect(Set(list).isSuperset(of: ["user.colour", "user.shape"]))
      // The attribute is really stored on SOURCE's file.
      #expect(getxattr(scratch.path("src/tagged"), "user.shape", &buffer, 64) == 5)

      #expect(removexattr(file, "user.colour") == 0)
      #expect(errnoOf { getxattr(file, "user.colour", &buffer, 64) } == ENODATA)
      #expect(errnoOf { Int(removexattr(file, "user.colour")) } == ENODATA)
      #expect(mkdir(m + "/dir", 0o755) == 0)
      #expect(setxattr(m + "/dir", "user.on-dir", "yes", 3, 0) == 0)
      #expect(getxattr(scratch.path("src/dir"), "user.on-dir", &buffer, 64) == 3)
    }
  }

  @Test("truncate and ftruncate shrink and grow with zeros")
  func truncation() throws {
    try withMirror { (mirror, scratch) throws in
      let m = mirror.mountpoint
      try writeFile(m + "/t", String(repeating: "abcdefghij", count: 1000))
      #expect(truncate(m + "/t", 100) == 0)
      #expect(try lstatOf(m + "/t").st_size == 100)
      #expect(try lstatOf(scratch.path("src/t")).st_size == 100)
      let descriptor = open(m + "/t", O_RDWR)
      #expect(descriptor >= 0)
      defer { close(descriptor) }
      #expect(ftruncate(descriptor, 5000) == 0)
      var buffer = [UInt8](repeating: 0xff, count: 5000)
      #expect(pread(descriptor, &buffer, 5000, 0) == 5000)
      #expect(buffer[99] == UInt8(ascii: "j"))
      #expect(buffer[100...].allSatisfy { $0 == 0 })
      #expect(try readFile(m + "/t").utf8.count == 5000)
      #expect(ftruncate(descriptor, 0) == 0)
      #expect(try readFile(scratch.path("src/t")) == "")
      #expect(errnoOf { Int(truncate(m + "/t", -1)) } == EINVAL)
    }
  }

  @Test("a sparse write at 5 GiB lands at 5 GiB in SOURCE", arguments: PassthroughTests.modes)
  func beyondFourGiB(mode: String) throws {
    try withMirror(options: [mode]) { (mirror, scratch) throws in
      let m = mirror.mountpoint
      let offset: off_t = 5 << 30
      let descriptor = open(m + "/sparse", O_RDWR | O_CREAT, 0o644)
      #expect(descriptor >= 0)
      #expect(pwrite(descriptor, "tail", 4, offset) == 4)
      var attributes = stat()
      #expect(fstat(descriptor, &attributes) == 0)
      #expect(attributes.st_size == offset + 4)
      var buffer = [UInt8](repeating: 0xff, count: 8)
      #expect(pread(descriptor, &buffer, 8, offset) == 4)
      #expect(Array(buffer[..<4]) == Array("tail".utf8))
      #expect(pread(descriptor, &buffer, 8, 1 << 32) == 8)
      #expect(buffer.allSatisfy { $0 == 0 })
      #expect(lseek(descriptor, 0, 3) == offset & ~4095)  // SEEK_DATA
      close(descriptor)

      let sourceAttributes = try lstatOf(scratch.path("src/sparse"))
      #expect(sourceAttributes.st_size == offset + 4)
      #expect(sourceAttributes.st_blocks * 512 < 1 << 20)
      let direct = open(scratch.path("src/sparse"), O_RDONLY)
      defer { close(direct) }
      #expect(pread(direct, &buffer, 4, offset) == 4)
      #expect(Array(buffer[..<4]) == Array("tail".utf8))
    }
  }

  @Test("errno of failing operations matches the kernel's rules")
  func errnoCases() throws {
    try withMirror { (mirror, _) throws in
      let m = mirror.mountpoint
      var attributes = stat()
      try writeFile(m + "/file", "f")
      #expect(mkdir(m + "/dir", 0o755) == 0)
      try writeFile(m + "/dir/entry", "e")

      #expect(errnoOf { Int(stat(m + "/absent", &attributes)) } == ENOENT)
      #expect(errnoOf { Int(open(m + "/absent/x", O_RDONLY)) } == ENOENT)
      #expect(errnoOf { Int(open(m + "/file/x", O_RDONLY)) } == ENOTDIR)
      #expect(errnoOf { Int(open(m + "/file", O_RDWR | O_CREAT | O_EXCL, 0o644)) } == EEXIST)
      #expect(errnoOf { Int(open(m + "/dir", O_WRONLY)) } == EISDIR)
      #expect(errnoOf { Int(mkdir(m + "/dir", 0o755)) } == EEXIST)
      #expect(errnoOf { Int(rmdir(m + "/dir")) } == ENOTEMPTY)
      #expect(errnoOf { Int(rmdir(m + "/file")) } == ENOTDIR)
      #expect(errnoOf { Int(unlink(m + "/dir")) } == EISDIR)
      #expect(errnoOf { Int(unlink(m + "/absent")) } == ENOENT)
      let longName = m + "/" + String(repeating: "n", count: 256)
      #expect(errnoOf { Int(open(longName, O_RDWR | O_CREAT, 0o644)) } == ENAMETOOLONG)
      #expect(unlink(m + "/dir/entry") == 0)
      #expect(rmdir(m + "/dir") == 0)
      #expect(errnoOf { Int(stat(m + "/dir", &attributes)) } == ENOENT)
    }
  }

  static func existingFile(_ scratch: Scratch) throws {
    try writeFile(scratch.path("src/existing"), "kept")
  }

  @Test("ro: reads work, every change fails with EROFS")
  func readOnly() throws {
    try withMirror(options: ["ro"], prepare: FilesystemTests.existingFile) {
      (mirror, scratch) throws in
      let m = mirror.mountpoint
      #expect(try readFile(m + "/existing") == "kept")
      #expect(errnoOf { Int(open(m + "/existing", O_WRONLY)) } == EROFS)
      #expect(errnoOf { Int(open(m + "/new", O_WRONLY | O_CREAT, 0o644)) } == EROFS)
      #expect(errnoOf { Int(mkdir(m + "/d", 0o755)) } == EROFS)
      #expect(errnoOf { Int(unlink(m + "/existing")) } == EROFS)
      #expect(errnoOf { Int(chmod(m + "/existing", 0o600)) } == EROFS)
      #expect(errnoOf { Int(setxattr(m + "/existing", "user.a", "b", 1, 0)) } == EROFS)
      #expect(try readFile(scratch.path("src/existing")) == "kept")
      #expect(fuseMount(at: m).map { _ in true } == true)
    }
  }

  @Test("chmod, chown and utimens reach SOURCE")
  func attributes() throws {
    try withMirror { (mirror, scratch) throws in
      let m = mirror.mountpoint
      let src = scratch.path("src")
      try writeFile(m + "/f", "attributes")
      #expect(chmod(m + "/f", 0o640) == 0)
      #expect(try lstatOf(src + "/f").st_mode & 0o7777 == 0o640)
      #expect(chown(m + "/f", 1234, 5678) == 0)
      #expect(try lstatOf(src + "/f").st_uid == 1234)
      #expect(try lstatOf(src + "/f").st_gid == 5678)
      #expect(chmod(m + "/f", 0o4755) == 0)
      #expect(try lstatOf(src + "/f").st_mode & 0o7777 == 0o4755)
      let times = [
        timespec(tv_sec: 981_173_106, tv_nsec: 5), timespec(tv_sec: 981_173_107, tv_nsec: 7),
      ]
      #expect(utimensat(AT_FDCWD, m + "/f", times, 0) == 0)
      let after = try lstatOf(src + "/f")
      #expect(after.st_atim.tv_sec == 981_173_106)
      #expect(after.st_mtim.tv_sec == 981_173_107)
      #expect(after.st_mtim.tv_nsec == 7)
      // An omitted time stays as it was.
      let onlyAccess = [
        timespec(tv_sec: 5, tv_nsec: 0), timespec(tv_sec: 0, tv_nsec: Int(MWK_UTIME_OMIT)),
      ]
      #expect(utimensat(AT_FDCWD, m + "/f", onlyAccess, 0) == 0)
      #expect(try lstatOf(src + "/f").st_mtim.tv_sec == 981_173_107)
      #expect(try lstatOf(m + "/f").st_atim.tv_sec == 5)
    }
  }

  @Test("create never follows a symlink planted in SOURCE behind the kernel's back")
  func createDoesNotFollowPlantedSymlink() throws {
    try withMirror(options: ["negative_timeout=60"]) { (mirror, scratch) throws in
      let m = mirror.mountpoint
      let outside = scratch.path("outside-target")
      var attributes = stat()
      // The kernel caches "no such name" for a minute...
      #expect(errnoOf { Int(stat(m + "/victim", &attributes)) } == ENOENT)
      // ...while SOURCE gets a symlink of that name pointing out of SOURCE.
      #expect(symlink(outside, scratch.path("src/victim")) == 0)
      #expect(errnoOf { Int(stat(m + "/victim", &attributes)) } == ENOENT)
      let created = errnoOf { Int(open(m + "/victim", O_WRONLY | O_CREAT | O_TRUNC, 0o644)) }
      #expect(created == ELOOP)
      #expect(throws: ErrnoError(ENOENT)) { try lstatOf(outside) }
      let exclusive = errnoOf {
        Int(open(m + "/victim", O_WRONLY | O_CREAT | O_EXCL, 0o644))
      }
      #expect(exclusive == EEXIST)
      #expect(throws: ErrnoError(ENOENT)) { try lstatOf(outside) }
    }
  }

  @Test("FIFOs and sockets are made with mknod")
  func specialFiles() throws {
    try withMirror { (mirror, scratch) throws in
      let m = mirror.mountpoint
      #expect(mkfifo(m + "/pipe", 0o600) == 0)
      #expect(try lstatOf(m + "/pipe").st_mode & S_IFMT == S_IFIFO)
      #expect(try lstatOf(scratch.path("src/pipe")).st_mode & S_IFMT == S_IFIFO)
      #expect(mknod(m + "/socket", S_IFSOCK | 0o600, 0) == 0)
      #expect(try lstatOf(scratch.path("src/socket")).st_mode & S_IFMT == S_IFSOCK)
      #expect(errnoOf { Int(mkfifo(m + "/pipe", 0o600)) } == EEXIST)
    }
  }

  @Test("copy_file_range, fallocate and statfs pass through")
  func dataOperations() throws {
    try withMirror { (mirror, scratch) throws in
      let m = mirror.mountpoint
      let payload = String(repeating: "0123456789abcdef", count: 65536)  // 1 MiB
      try writeFile(m + "/from", payload)
      let input = open(m + "/from", O_RDONLY)
      let output = open(m + "/to", O_RDWR | O_CREAT, 0o644)
      defer {
        close(input)
        close(output)
      }
      var copied = 0
      while copied < payload.utf8.count {
        let count = mwk_copy_file_range(
          input, Int64(copied), output, Int64(copied), payload.utf8.count - copied, 0)
        #expect(count > 0)
        guard count > 0 else { break }
        copied += count
      }
      #expect(try readFile(scratch.path("src/to")) == payload)

      #expect(mwk_fallocate(output, 0, 0, 4 << 20) == 0)
      #expect(try lstatOf(scratch.path("src/to")).st_size == 4 << 20)

      var mounted = statvfs()
      var direct = statvfs()
      #expect(statvfs(m, &mounted) == 0)
      #expect(statvfs(scratch.path("src"), &direct) == 0)
      #expect(mounted.f_blocks == direct.f_blocks)
      #expect(mounted.f_bsize == direct.f_bsize)
      #expect(mounted.f_namemax == direct.f_namemax)
    }
  }

  static func bigDirectory(_ scratch: Scratch) throws {
    try mustRun(
      "mkdir big && cd big && seq 1 3000 | sed 's/^/entry-/' | xargs touch",
      in: scratch.path("src"))
  }

  @Test("a directory of 3000 entries lists completely, with and without attributes")
  func largeDirectory() throws {
    try withMirror(prepare: FilesystemTests.bigDirectory) { (mirror, scratch) throws in
      let names = try listDirectory(mirror.mountpoint + "/big")
      #expect(names.count == 3000)
      #expect(Set(names) == Set((1...3000).map { "entry-\($0)" }))
      // ls -l reads with readdirplus; every line must match SOURCE's.
      let listing = "ls -la --time-style=+%s"
      let mounted = try mustRun(listing, in: mirror.mountpoint + "/big")
      let direct = try mustRun(listing, in: scratch.path("src/big"))
      #expect(mounted.split(separator: "\n").count == 3003)
      #expect(mounted == direct)
    }
  }
}

/// The target of the symlink at `path`, or `nil`.
func readLink(_ path: String) -> String? {
  var buffer = [CChar](repeating: 0, count: Int(PATH_MAX))
  let length = readlink(path, &buffer, buffer.count)
  guard length >= 0 else { return nil }
  return String(decoding: buffer[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// The names in the directory at `path` (without `.` and `..`), through readdir(3).
func listDirectory(_ path: String) throws -> [String] {
  guard let stream = opendir(path) else { throw ErrnoError(errno) }
  defer { closedir(stream) }
  var names: [String] = []
  while let entry = readdir(stream) {
    let name = withUnsafePointer(to: &entry.pointee.d_name) {
      String(cString: UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self))
    }
    if name != "." && name != ".." { names.append(name) }
  }
  return names
}
