// Capabilities documents for the parser tests. Swift literals rather than resource files: the test target
// declares no resources.

/// `virsh -c test:///default capabilities`, libvirt 9.0.0 (Debian 12), verbatim.
let testDriverCapabilities = """
    <capabilities>

      <host>
        <cpu>
          <arch>i686</arch>
          <features>
            <pae/>
            <nonpae/>
          </features>
          <pages unit='KiB' size='4'/>
          <pages unit='KiB' size='8'/>
          <pages unit='KiB' size='2048'/>
          <pages unit='KiB' size='1048576'/>
        </cpu>
        <power_management/>
        <iommu support='no'/>
        <topology>
          <cells num='2'>
            <cell id='0'>
              <memory unit='KiB'>2097152</memory>
              <pages unit='KiB' size='4'>524288</pages>
              <pages unit='KiB' size='2048'>0</pages>
              <pages unit='KiB' size='1048576'>0</pages>
              <cpus num='8'>
                <cpu id='0' socket_id='0' die_id='0' core_id='0' siblings='0'/>
                <cpu id='1' socket_id='0' die_id='0' core_id='1' siblings='1'/>
                <cpu id='2' socket_id='0' die_id='0' core_id='2' siblings='2'/>
                <cpu id='3' socket_id='0' die_id='0' core_id='3' siblings='3'/>
                <cpu id='4' socket_id='0' die_id='0' core_id='4' siblings='4'/>
                <cpu id='5' socket_id='0' die_id='0' core_id='5' siblings='5'/>
                <cpu id='6' socket_id='0' die_id='0' core_id='6' siblings='6'/>
                <cpu id='7' socket_id='0' die_id='0' core_id='7' siblings='7'/>
              </cpus>
            </cell>
            <cell id='1'>
              <memory unit='KiB'>4194304</memory>
              <pages unit='KiB' size='8'>524288</pages>
              <pages unit='KiB' size='2048'>0</pages>
              <pages unit='KiB' size='1048576'>0</pages>
              <cpus num='8'>
                <cpu id='8' socket_id='1' die_id='0' core_id='0' siblings='8'/>
                <cpu id='9' socket_id='1' die_id='0' core_id='1' siblings='9'/>
                <cpu id='10' socket_id='1' die_id='0' core_id='2' siblings='10'/>
                <cpu id='11' socket_id='1' die_id='0' core_id='3' siblings='11'/>
                <cpu id='12' socket_id='1' die_id='0' core_id='4' siblings='12'/>
                <cpu id='13' socket_id='1' die_id='0' core_id='5' siblings='13'/>
                <cpu id='14' socket_id='1' die_id='0' core_id='6' siblings='14'/>
                <cpu id='15' socket_id='1' die_id='0' core_id='7' siblings='15'/>
              </cpus>
            </cell>
          </cells>
        </topology>
        <secmodel>
          <model>testSecurity</model>
          <doi></doi>
        </secmodel>
      </host>

      <guest>
        <os_type>hvm</os_type>
        <arch name='i686'>
          <wordsize>32</wordsize>
          <emulator>/usr/bin/test-hv</emulator>
          <domain type='test'/>
        </arch>
        <features>
          <pae/>
          <nonpae/>
        </features>
      </guest>

      <guest>
        <os_type>xen</os_type>
        <arch name='i686'>
          <wordsize>32</wordsize>
          <emulator>/usr/bin/test-hv</emulator>
          <domain type='test'/>
        </arch>
        <features>
          <pae/>
          <nonpae/>
        </features>
      </guest>

    </capabilities>

    """

/// A KVM host as libvirt 9.0 with QEMU 7.2 describes it (`qemu:///system`), trimmed to the parts the parser reads
/// plus enough of the rest (NUMA, security models, machines) to show it is skipped.
let qemuHostCapabilities = """
    <capabilities>
      <host>
        <uuid>4c4c4544-0044-3510-8050-b3c04f4e3532</uuid>
        <cpu>
          <arch>x86_64</arch>
          <model>Skylake-Client-noTSX-IBRS</model>
          <vendor>Intel</vendor>
          <microcode version='240'/>
          <counter name='tsc' frequency='2711999000' scaling='no'/>
          <topology sockets='1' dies='1' cores='4' threads='2'/>
          <maxphysaddr mode='emulate' bits='39'/>
          <feature name='ds'/>
          <feature name='acpi'/>
          <feature name='ss'/>
          <feature name='vmx'/>
          <feature name='pdcm'/>
          <feature name='pdpe1gb'/>
          <feature name='invtsc'/>
          <pages unit='KiB' size='4'/>
          <pages unit='KiB' size='2048'/>
          <pages unit='KiB' size='1048576'/>
        </cpu>
        <power_management>
          <suspend_mem/>
          <suspend_disk/>
        </power_management>
        <iommu support='yes'/>
        <migration_features>
          <live/>
          <uri_transports>
            <uri_transport>tcp</uri_transport>
            <uri_transport>rdma</uri_transport>
          </uri_transports>
        </migration_features>
        <topology>
          <cells num='1'>
            <cell id='0'>
              <memory unit='KiB'>16250620</memory>
              <pages unit='KiB' size='4'>4062655</pages>
              <distances>
                <sibling id='0' value='10'/>
              </distances>
              <cpus num='2'>
                <cpu id='0' socket_id='0' die_id='0' core_id='0' siblings='0,4'/>
                <cpu id='1' socket_id='0' die_id='0' core_id='1' siblings='1,5'/>
              </cpus>
            </cell>
          </cells>
        </topology>
        <secmodel>
          <model>apparmor</model>
          <doi>0</doi>
        </secmodel>
        <secmodel>
          <model>dac</model>
          <doi>0</doi>
          <baselabel type='kvm'>+64055:+994</baselabel>
          <baselabel type='qemu'>+64055:+994</baselabel>
        </secmodel>
      </host>

      <guest>
        <os_type>hvm</os_type>
        <arch name='i686'>
          <wordsize>32</wordsize>
          <emulator>/usr/bin/qemu-system-i386</emulator>
          <machine maxCpus='288'>pc-q35-7.2</machine>
          <machine canonical='pc-q35-7.2' maxCpus='288'>q35</machine>
          <machine maxCpus='255'>pc-i440fx-7.2</machine>
          <machine canonical='pc-i440fx-7.2' maxCpus='255'>pc</machine>
          <machine maxCpus='1'>isapc</machine>
          <domain type='qemu'/>
          <domain type='kvm'/>
        </arch>
        <features>
          <pae/>
          <nonpae/>
          <acpi default='on' toggle='yes'/>
          <apic default='on' toggle='no'/>
          <cpuselection/>
          <deviceboot/>
          <disksnapshot default='on' toggle='no'/>
        </features>
      </guest>

      <guest>
        <os_type>hvm</os_type>
        <arch name='x86_64'>
          <wordsize>64</wordsize>
          <emulator>/usr/bin/qemu-system-x86_64</emulator>
          <machine maxCpus='288'>pc-q35-7.2</machine>
          <machine canonical='pc-q35-7.2' maxCpus='288'>q35</machine>
          <machine maxCpus='255'>pc-i440fx-7.2</machine>
          <machine canonical='pc-i440fx-7.2' maxCpus='255'>pc</machine>
          <machine maxCpus='1'>isapc</machine>
          <domain type='qemu'/>
          <domain type='kvm'/>
        </arch>
        <features>
          <acpi default='on' toggle='yes'/>
          <apic default='on' toggle='no'/>
          <cpuselection/>
          <deviceboot/>
          <disksnapshot default='on' toggle='no'/>
        </features>
      </guest>

    </capabilities>
    """

/// A Xen host under the libxl driver (`xen:///system`): paravirtual guests (os_type xen; 32-bit PV is PAE-only)
/// and fully virtualised ones (hvm, with Xen's hvmloader).
let xenHostCapabilities = """
    <capabilities>
      <host>
        <cpu>
          <arch>x86_64</arch>
          <features>
            <vmx/>
          </features>
        </cpu>
        <power_management/>
        <migration_features>
          <live/>
        </migration_features>
      </host>

      <guest>
        <os_type>xen</os_type>
        <arch name='x86_64'>
          <wordsize>64</wordsize>
          <emulator>/usr/lib/xen-4.17/bin/qemu-system-i386</emulator>
          <machine>xenpv</machine>
          <domain type='xen'/>
        </arch>
      </guest>

      <guest>
        <os_type>xen</os_type>
        <arch name='i686'>
          <wordsize>32</wordsize>
          <emulator>/usr/lib/xen-4.17/bin/qemu-system-i386</emulator>
          <machine>xenpv</machine>
          <domain type='xen'/>
        </arch>
        <features>
          <pae/>
        </features>
      </guest>

      <guest>
        <os_type>hvm</os_type>
        <arch name='i686'>
          <wordsize>32</wordsize>
          <emulator>/usr/lib/xen-4.17/bin/qemu-system-i386</emulator>
          <loader>/usr/lib/xen-4.17/boot/hvmloader</loader>
          <machine>xenfv</machine>
          <domain type='xen'/>
        </arch>
        <features>
          <pae/>
          <nonpae/>
          <acpi default='on' toggle='yes'/>
          <apic default='on' toggle='no'/>
          <hap default='on' toggle='yes'/>
        </features>
      </guest>

      <guest>
        <os_type>hvm</os_type>
        <arch name='x86_64'>
          <wordsize>64</wordsize>
          <emulator>/usr/lib/xen-4.17/bin/qemu-system-i386</emulator>
          <loader>/usr/lib/xen-4.17/boot/hvmloader</loader>
          <machine>xenfv</machine>
          <domain type='xen'/>
        </arch>
        <features>
          <acpi default='on' toggle='yes'/>
          <apic default='on' toggle='no'/>
          <hap default='on' toggle='yes'/>
        </features>
      </guest>

    </capabilities>
    """
