import CMountWorkerKitSupport
import Glibc
import MountWorkerKit

// Creating and removing names: each the same call in SOURCE's directory, and a new file given
// to the user who asked for it.
extension MirrorFileSystem {
  func mknod(
    _ request: FUSERequest, parent: FUSEInode, name: FUSEName, mode: mode_t, device: dev_t
  ) throws(FUSEError) -> FUSEEntry {
    let directory = try nodes.node(parent)
    guard mknodat(directory.descriptor, name.cString, mode, device) == 0 else { throw .current }
    try giveToCaller(request, directory: directory, name: name, removeFlags: 0)
    return try entry(in: directory, name: name)
  }

  func mkdir(_ request: FUSERequest, parent: FUSEInode, name: FUSEName, mode: mode_t)
    throws(FUSEError) -> FUSEEntry
  {
    let directory = try nodes.node(parent)
    guard mkdirat(directory.descriptor, name.cString, mode) == 0 else { throw .current }
    try giveToCaller(request, directory: directory, name: name, removeFlags: AT_REMOVEDIR)
    return try entry(in: directory, name: name)
  }

  func symlink(_ request: FUSERequest, target: FUSEName, parent: FUSEInode, name: FUSEName)
    throws(FUSEError) -> FUSEEntry
  {
    let directory = try nodes.node(parent)
    guard symlinkat(target.cString, directory.descriptor, name.cString) == 0 else {
      throw .current
    }
    try giveToCaller(request, directory: directory, name: name, removeFlags: 0)
    return try entry(in: directory, name: name)
  }

  func link(_ request: FUSERequest, inode: FUSEInode, newParent: FUSEInode, newName: FUSEName)
    throws(FUSEError) -> FUSEEntry
  {
    let node = try nodes.node(inode)
    let directory = try nodes.node(newParent)
    let result = withProcPath(node.descriptor) {
      linkat(AT_FDCWD, $0, directory.descriptor, newName.cString, AT_SYMLINK_FOLLOW)
    }
    guard result == 0 else { throw .current }
    return try entry(in: directory, name: newName)
  }

  func unlink(_ request: FUSERequest, parent: FUSEInode, name: FUSEName) throws(FUSEError) {
    guard unlinkat(try nodes.node(parent).descriptor, name.cString, 0) == 0 else { throw .current }
  }

  func rmdir(_ request: FUSERequest, parent: FUSEInode, name: FUSEName) throws(FUSEError) {
    guard unlinkat(try nodes.node(parent).descriptor, name.cString, AT_REMOVEDIR) == 0 else {
      throw .current
    }
  }

  func rename(
    _ request: FUSERequest, parent: FUSEInode, name: FUSEName, newParent: FUSEInode,
    newName: FUSEName, flags: FUSERenameFlags
  ) throws(FUSEError) {
    guard
      mwk_renameat2(
        try nodes.node(parent).descriptor, name.cString, try nodes.node(newParent).descriptor,
        newName.cString, flags.rawValue) == 0
    else { throw .current }
  }

  /// A root worker creates files as root; give a new file to the user who asked for it, with
  /// the group the caller's (or, in a set-group-id directory, the directory's). On failure
  /// the new file is removed again so that the caller sees one error and no half-made file.
  func giveToCaller(
    _ request: FUSERequest, directory: MirrorNode, name: FUSEName, removeFlags: Int32,
    descriptor: Int32? = nil
  ) throws(FUSEError) {
    guard runsAsRoot else { return }
    let caller = request.context
    guard caller.uid != 0 || caller.gid != 0 else { return }
    var parent = stat()
    guard fstatat(directory.descriptor, "", &parent, MWK_AT_EMPTY_PATH) == 0 else {
      throw .current
    }
    let gid = parent.st_mode & S_ISGID != 0 ? gid_t.max : caller.gid
    let result =
      if let descriptor {
        fchown(descriptor, caller.uid, gid)
      } else {
        fchownat(directory.descriptor, name.cString, caller.uid, gid, AT_SYMLINK_NOFOLLOW)
      }
    guard result == 0 else {
      let error = FUSEError.current
      unlinkat(directory.descriptor, name.cString, removeFlags)
      throw error
    }
  }
}
