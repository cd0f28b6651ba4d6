import Glibc
import Testing

/// Real programs run in the mount and, identically, in a plain directory: the results must
/// match, and SOURCE must hold the same result.
@Suite("mountsup-mirror under real workloads")
struct WorkloadTests {
  /// Names, types, modes, sizes and link counts of a tree, plus the checksum of every file.
  /// Directory sizes are left out: they depend on the order entries were made in.
  static let manifest = """
    find . -type d -printf '%p d %m %n\\n' -o -printf '%p %y %m %s %n %l\\n' | LC_ALL=C sort && \
    find . -type f -exec sha256sum {} + | LC_ALL=C sort -k2
    """

  @Test(
    "git: init, commits, branch, merge, rename, gc, fsck give the same history",
    arguments: PassthroughTests.modes)
  func git(mode: String) throws {
    let script = """
      set -e
      git init -q -b main repo && cd repo
      for i in 1 2 3 4 5; do
        printf 'line %s\\n' $i >> file.txt
        mkdir -p dir$i && seq 1 $((i * 100)) > dir$i/numbers
        git add -A && git commit -q -m "commit $i"
      done
      git checkout -q -b topic && echo topic > topic.txt && git add topic.txt
      git commit -q -m topic
      git checkout -q main && git merge -q --no-edit topic
      git mv file.txt renamed.txt && git commit -q -m rename
      git tag v1
      git gc -q --aggressive
      git fsck --full --strict
      git rev-parse HEAD v1 topic
      git log --format='%H %s'
      git status --porcelain
      git count-objects -v | grep -v size
      """
    try withMirror(options: [mode]) { (mirror, scratch) throws in
      let mounted = try mustRun(script, in: mirror.mountpoint)
      let native = try mustRun(script, in: scratch.path("native"))
      #expect(mounted == native)
      #expect(mounted.contains("rename"))
      // SOURCE holds a repository that git accepts as it is.
      let direct = try mustRun(
        "git fsck --full --strict && git rev-parse HEAD", in: scratch.path("src/repo"))
      #expect(mounted.contains(direct.split(separator: "\n").last.map(String.init) ?? "missing"))
    }
  }

  @Test(
    "tar: an extracted tree has the same names, modes, links and checksums",
    arguments: PassthroughTests.modes)
  func tarExtract(mode: String) throws {
    let makeTree = """
      set -e
      mkdir -p tree/a/b/c tree/empty tree/exec
      for size in 0 1 4095 4096 4097 65537 1048579 3145728; do
        head -c $size /dev/urandom > tree/a/file-$size
      done
      head -c 200000 /dev/urandom > tree/a/b/c/deep
      printf '#!/bin/sh\\necho run\\n' > tree/exec/script && chmod 755 tree/exec/script
      chmod 600 tree/a/file-1 && chmod 1777 tree/empty
      ln -s ../a/file-4096 tree/exec/relative-link
      ln -s /does/not/exist tree/dangling
      ln tree/a/file-65537 tree/a/b/hard
      mkfifo tree/fifo
      touch -d '2001-02-03 04:05:06' tree/a/file-0
      tar -cf tree.tar tree && rm -rf tree
      """
    try withMirror(options: [mode]) { (mirror, scratch) throws in
      let native = scratch.path("native")
      try mustRun(makeTree, in: native)
      let tarball = native + "/tree.tar"
      try mustRun("tar -xpf \(tarball)", in: mirror.mountpoint)
      try mustRun("mkdir extracted && tar -xpf \(tarball) -C extracted", in: native)

      let mounted = try mustRun("cd tree && " + WorkloadTests.manifest, in: mirror.mountpoint)
      let expected = try mustRun("cd extracted/tree && " + WorkloadTests.manifest, in: native)
      let source = try mustRun("cd tree && " + WorkloadTests.manifest, in: scratch.path("src"))
      #expect(mounted == expected)
      #expect(source == expected)
      #expect(mounted.contains("./a/b/hard f 644 65537 2"))
      #expect(mounted.contains("./fifo p"))
      // mtimes restored by tar (utimens) and the executable runs from the mount.
      let times = "find . -printf '%p %T@\\n' | LC_ALL=C sort"
      #expect(
        try mustRun("cd tree && " + times, in: mirror.mountpoint)
          == mustRun("cd extracted/tree && " + times, in: native))
      #expect(try mustRun("./tree/exec/script", in: mirror.mountpoint) == "run\n")
      // Re-archiving from the mount reproduces the archive's content.
      try mustRun("tar -cf \(native)/again.tar tree", in: mirror.mountpoint)
      #expect(
        try mustRun("tar -tvf again.tar | LC_ALL=C sort", in: native)
          == mustRun("tar -tvf tree.tar | LC_ALL=C sort", in: native))
    }
  }

  @Test("a mirror of a mirror (SOURCE on FUSE, so flush is used) carries git and tar")
  func stackedMirror() throws {
    try withMirror { (lower, scratch) throws in
      let upper = try MirrorProcess(
        source: lower.mountpoint, mountpoint: try scratch.directory("top"))
      defer { upper.stopAndClean() }
      try upper.waitReady()
      let script = """
        set -e
        git init -q -b main repo && cd repo
        seq 1 5000 > numbers && git add numbers && git commit -q -m one
        tar -cf ../repo.tar . && mkdir ../copy && tar -xf ../repo.tar -C ../copy
        git fsck --full --strict && git rev-parse HEAD
        """
      let stacked = try mustRun(script, in: upper.mountpoint)
      let native = try mustRun(script, in: scratch.path("native"))
      #expect(stacked == native)
      // The copy made through both layers is a sound repository in SOURCE.
      let check = "cd copy && git fsck --full --strict && git rev-parse HEAD && sha256sum numbers"
      #expect(
        try mustRun(check, in: scratch.path("src")) == mustRun(check, in: scratch.path("native")))
      #expect(try upper.stop() == 0)
    }
  }

  @Test(
    "four processes creating, renaming, linking and deleting at once end as natively",
    arguments: PassthroughTests.modes)
  func parallelProcesses(mode: String) throws {
    let script = """
      set -e
      head -c 65536 /dev/urandom > shared-input
      work() {
        j=$1; mkdir -p p$j; i=0
        while [ $i -lt 150 ]; do
          i=$((i + 1))
          printf 'worker %s file %s\\n' $j $i > p$j/f$i
          cat shared-input >> p$j/f$i
          mv p$j/f$i p$j/g$i
          ln p$j/g$i shared-$j-$i
          if [ $((i % 3)) -eq 0 ]; then rm p$j/g$i shared-$j-$i; fi
          if [ $((i % 10)) -eq 0 ]; then mkdir p$j/d$i && rmdir p$j/d$i; fi
          echo "$j $i" >> journal
        done
      }
      pids=""
      for j in 1 2 3 4; do work $j & pids="$pids $!"; done
      for pid in $pids; do wait $pid; done
      """
    let summary = """
      find . -path ./journal -prune -o -type d -printf '%p d %m %n\\n' -o -printf '%p %y %m %s %n\\n' \\
        | LC_ALL=C sort
      find . -type f ! -name journal -exec sha256sum {} + | awk '{print $2}' | LC_ALL=C sort | wc -l
      LC_ALL=C sort journal | uniq | wc -l
      wc -l < journal
      """
    try withMirror(options: [mode]) { (mirror, scratch) throws in
      try mustRun(script, in: mirror.mountpoint)
      try mustRun(script, in: scratch.path("native"))
      let mounted = try mustRun(summary, in: mirror.mountpoint)
      let native = try mustRun(summary, in: scratch.path("native"))
      #expect(mounted == native)
      #expect(mounted.hasSuffix("600\n600\n"))
      // Each worker's files have the content that worker wrote.
      let check =
        "for f in p*/g*; do head -c 7 \"$f\" | grep -q worker || echo bad $f; done; echo checked"
      #expect(try mustRun(check, in: mirror.mountpoint) == "checked\n")
    }
  }

  /// Two processes write halves of a file through shared mappings while two others read it
  /// through mappings and read(2); run in the mount and natively, the same results.
  static let mappedIO = #"""
    import mmap, os, sys, hashlib
    size, name = 8 << 20, "mapped.bin"
    with open(name, "wb") as f: f.truncate(size)
    def pattern(i): return bytes((i * 7 + j) & 255 for j in range(4096))
    def writer(half):
        fd = os.open(name, os.O_RDWR)
        m = mmap.mmap(fd, size)
        for i in range(half * 1024, half * 1024 + 1024):
            m[i * 4096:(i + 1) * 4096] = pattern(i)
        m.flush(); m.close(); os.close(fd)
    def reader():
        fd = os.open(name, os.O_RDONLY)
        m = mmap.mmap(fd, size, prot=mmap.PROT_READ)
        bad = sum(1 for i in range(2048) if m[i * 4096:(i + 1) * 4096] != pattern(i))
        read = b"".join(os.pread(fd, 1 << 20, o) for o in range(0, size, 1 << 20))
        m.close(); os.close(fd)
        return bad, read == expected
    expected = b"".join(pattern(i) for i in range(2048))
    pids = []
    for half in (0, 1):
        pid = os.fork()
        if pid == 0: writer(half); os._exit(0)
        pids.append(pid)
    for pid in pids: assert os.waitpid(pid, 0)[1] == 0
    results = []
    for _ in (0, 1):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r); os.write(w, repr(reader()).encode()); os._exit(0)
        os.close(w); results.append(os.read(r, 100).decode()); os.waitpid(pid, 0)
    # A writer that maps the file while it is open for reading elsewhere, then a fresh read.
    fd = os.open(name, os.O_RDWR); m = mmap.mmap(fd, size); m[0:5] = b"hello"; m.close()
    os.close(fd)
    print(results, hashlib.sha256(open(name, "rb").read()).hexdigest())
    """#

  @Test(
    "mmap: writers and readers of one file through shared mappings agree, and SOURCE holds it",
    arguments: PassthroughTests.modes)
  func mappedReadersAndWriters(mode: String) throws {
    try withMirror(options: [mode]) { (mirror, scratch) throws in
      // The program holds no single quote, so it goes to the shell as it is.
      let script = "python3 -c '\(WorkloadTests.mappedIO)'"
      let mounted = try mustRun(script, in: mirror.mountpoint)
      let native = try mustRun(script, in: scratch.path("native"))
      #expect(mounted == native)
      #expect(mounted.hasPrefix("['(0, True)', '(0, True)']"))
      #expect(
        try mustRun("sha256sum mapped.bin | cut -d' ' -f1", in: scratch.path("src"))
          == mustRun("sha256sum mapped.bin | cut -d' ' -f1", in: scratch.path("native")))
    }
  }
}
