import Glibc
import MountWorkerKit
import Synchronization

/// The example of docs/worker-kit.md: a flat, in-memory directory of files that can be
/// created, written, truncated, listed and removed.
final class NotesFileSystem: FUSEFileSystem {
  private struct Note {
    var data: [UInt8]
    var mode: mode_t
    var modified: timespec
    /// Names pointing here (0 after unlink) and lookups the kernel holds.
    var links = 1
    var lookups: UInt64 = 0
  }

  private struct State {
    var names: [String: UInt64] = [:]
    var notes: [UInt64: Note] = [:]
    var nextInode: UInt64 = 2
  }

  private let state = Mutex(State())

  init(notes: [String: String]) {
    state.withLock { state in
      for (name, text) in notes {
        state.names[name] = state.nextInode
        state.notes[state.nextInode] = Note(
          data: Array(text.utf8), mode: 0o644, modified: NotesFileSystem.now())
        state.nextInode += 1
      }
    }
  }

  private static func now() -> timespec {
    var time = timespec()
    clock_gettime(CLOCK_REALTIME, &time)
    return time
  }

  private func entry(_ inode: UInt64, _ note: Note) -> FUSEEntry {
    FUSEEntry(
      inode: FUSEInode(inode), attributes: attributes(inode, note), attributeTimeout: 1,
      entryTimeout: 1)
  }

  private func attributes(_ inode: UInt64, _ note: Note) -> FUSEAttributes {
    FUSEAttributes(
      inode: inode, mode: S_IFREG | note.mode, linkCount: note.links, size: Int64(note.data.count),
      modified: note.modified)
  }

  func lookup(_ request: FUSERequest, parent: FUSEInode, name: FUSEName) throws(FUSEError)
    -> FUSEEntry
  {
    guard parent == .root else { throw .noEntry }
    return try state.withLock { state throws(FUSEError) in
      guard let inode = state.names[name.string] else { throw .noEntry }
      state.notes[inode]!.lookups += 1
      return entry(inode, state.notes[inode]!)
    }
  }

  func forget(inode: FUSEInode, lookups: UInt64) {
    state.withLock { state in
      guard var note = state.notes[inode.rawValue] else { return }
      note.lookups -= lookups
      // A note lives while it has a name or the kernel still knows it.
      state.notes[inode.rawValue] = note.links == 0 && note.lookups == 0 ? nil : note
    }
  }

  func getattr(_ request: FUSERequest, inode: FUSEInode, handle: UInt64?) throws(FUSEError)
    -> FUSEAttributeReply
  {
    if inode == .root {
      return FUSEAttributeReply(
        attributes: FUSEAttributes(inode: 1, mode: S_IFDIR | 0o755, linkCount: 2), timeout: 1)
    }
    return try state.withLock { state throws(FUSEError) in
      guard let note = state.notes[inode.rawValue] else { throw .noEntry }
      return FUSEAttributeReply(attributes: attributes(inode.rawValue, note), timeout: 1)
    }
  }

  func setattr(
    _ request: FUSERequest, inode: FUSEInode, changes: FUSESetAttributes, handle: UInt64?
  ) throws(FUSEError) -> FUSEAttributeReply {
    try state.withLock { state throws(FUSEError) in
      guard var note = state.notes[inode.rawValue] else { throw .noEntry }
      if changes.uid != nil || changes.gid != nil { throw .notPermitted }
      if let mode = changes.mode { note.mode = mode }
      if let size = changes.size {
        note.data = Array(note.data.prefix(Int(size)))
        note.data += [UInt8](repeating: 0, count: Int(size) - note.data.count)
      }
      if let time = changes.modificationTime {
        note.modified = time == .now ? NotesFileSystem.now() : time.timespec
      }
      state.notes[inode.rawValue] = note
      return FUSEAttributeReply(attributes: attributes(inode.rawValue, note), timeout: 1)
    }
  }

  func create(
    _ request: FUSERequest, parent: FUSEInode, name: FUSEName, mode: mode_t, flags: Int32
  ) throws(FUSEError) -> (entry: FUSEEntry, open: FUSEOpenReply) {
    guard parent == .root else { throw .noEntry }
    return try state.withLock { state throws(FUSEError) in
      guard state.names[name.string] == nil else { throw .exists }
      let inode = state.nextInode
      state.nextInode += 1
      state.names[name.string] = inode
      let note = Note(data: [], mode: mode & 0o7777, modified: NotesFileSystem.now(), lookups: 1)
      state.notes[inode] = note
      return (entry(inode, note), FUSEOpenReply())
    }
  }

  func unlink(_ request: FUSERequest, parent: FUSEInode, name: FUSEName) throws(FUSEError) {
    try state.withLock { state throws(FUSEError) in
      guard parent == .root, let inode = state.names.removeValue(forKey: name.string) else {
        throw .noEntry
      }
      state.notes[inode]!.links = 0
    }
  }

  func read(_ request: FUSERequest, inode: FUSEInode, handle: UInt64, offset: Int64, size: Int)
    throws(FUSEError) -> FUSEReadReply
  {
    try state.withLock { state throws(FUSEError) in
      guard let note = state.notes[inode.rawValue] else { throw .noEntry }
      let start = min(Int(offset), note.data.count)
      return .bytes(Array(note.data[start..<min(start + size, note.data.count)]))
    }
  }

  func write(
    _ request: FUSERequest, inode: FUSEInode, handle: UInt64, offset: Int64,
    data: UnsafeRawBufferPointer
  ) throws(FUSEError) -> Int {
    try state.withLock { state throws(FUSEError) in
      guard var note = state.notes[inode.rawValue] else { throw .noEntry }
      let end = Int(offset) + data.count
      if note.data.count < end { note.data += [UInt8](repeating: 0, count: end - note.data.count) }
      note.data.replaceSubrange(Int(offset)..<end, with: data)
      note.modified = NotesFileSystem.now()
      state.notes[inode.rawValue] = note
      return data.count
    }
  }

  func readdir(
    _ request: FUSERequest, inode: FUSEInode, handle: UInt64, offset: Int64,
    into buffer: inout FUSEDirectoryBuffer
  ) throws(FUSEError) {
    guard inode == .root else { throw .notDirectory }
    // Offsets: 1 after ".", 2 after "..", 2 + n after the n-th name in sorted order.
    let names = state.withLock { state in state.names.sorted { $0.key < $1.key } }
    let listing =
      [(".", UInt64(1), S_IFDIR), ("..", UInt64(1), S_IFDIR)]
      + names.map { ($0.key, $0.value, S_IFREG) }
    for (index, (name, inode, type)) in listing.enumerated().dropFirst(Int(offset)) {
      guard buffer.add(name: name, inode: inode, type: type, nextOffset: Int64(index + 1)) else {
        return
      }
    }
  }
}
