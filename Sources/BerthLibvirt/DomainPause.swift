import CLibvirt

extension LibvirtDomain {
    /// Pauses the guest's vCPUs; its memory and devices stay as they are.
    public func suspend() throws {
        try LibvirtCall.check(doing: "cannot pause domain \(name)") { virDomainSuspend(handle) }
    }

    public func resume() throws {
        try LibvirtCall.check(doing: "cannot resume domain \(name)") { virDomainResume(handle) }
    }
}

extension LibvirtHost {
    /// Pauses a running domain so a copy of its disks is consistent; returns whether it was running (and so
    /// must be resumed). The copy itself happens off the libvirt thread, between this call and `resume`.
    public func pauseIfRunning(uuid: String) throws -> Bool {
        try withConnection { connection in
            guard let domain = try connection.lookupDomain(uuid: uuid) else { return false }
            guard try domain.state() == .running else { return false }
            try domain.suspend()
            return true
        }
    }

    public func resume(uuid: String) throws {
        try withConnection { connection in
            guard let domain = try connection.lookupDomain(uuid: uuid), try domain.state() == .paused else { return }
            try domain.resume()
        }
    }
}
