"""Host inventory: works on this machine, and on a fake /proc + /sys tree, missing files included."""

from __future__ import annotations

import json
import platform

from clusterbench.probes.health import read_host_inventory


def write(root, relative, text):
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def fake_two_socket_host(root):
    write(root, "proc/cpuinfo", "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n")
    write(root, "proc/meminfo", "MemTotal:       2113381956 kB\nMemFree:  1 kB\n")
    write(root, "etc/os-release", 'NAME="Ubuntu"\nPRETTY_NAME="Ubuntu 22.04.4 LTS"\n')
    # 2 sockets x 2 cores x 2 threads
    cpu = 0
    for package in (0, 1):
        for core in (0, 1):
            for _thread in (0, 1):
                write(root, f"sys/devices/system/cpu/cpu{cpu}/topology/physical_package_id", f"{package}\n")
                write(root, f"sys/devices/system/cpu/cpu{cpu}/topology/core_id", f"{core}\n")
                cpu += 1
    write(root, "sys/devices/system/cpu/online", "0-7\n")  # not a cpuN directory: ignored
    for node in (0, 1):
        (root / f"sys/devices/system/node/node{node}").mkdir(parents=True)
    (root / "sys/devices/system/node/power").mkdir()


def test_this_machine():
    inventory = read_host_inventory()
    assert inventory.hostname and inventory.python == platform.python_version()
    assert inventory.cores_logical >= 1 and inventory.memory_total_bytes > 0
    assert inventory.torch is not None
    if inventory.cuda_runtime is None:
        assert inventory.unavailable["cuda_runtime"] == "torch is built without CUDA"
    json.dumps(inventory.to_json())


def test_fake_two_socket_host(tmp_path):
    fake_two_socket_host(tmp_path)
    inventory = read_host_inventory(tmp_path)
    assert inventory.cpu_model == "Intel(R) Xeon(R) Platinum 8480+"
    assert (inventory.sockets, inventory.cores_physical, inventory.numa_nodes) == (2, 4, 2)
    assert inventory.memory_total_bytes == 2113381956 * 1024
    assert inventory.os == "Ubuntu 22.04.4 LTS"
    for field in ("cpu_model", "sockets", "cores_physical", "memory_total_bytes", "numa_nodes", "os"):
        assert field not in inventory.unavailable


def test_empty_root_gives_none_with_reasons(tmp_path):
    inventory = read_host_inventory(tmp_path)
    assert (inventory.cpu_model, inventory.sockets, inventory.memory_total_bytes, inventory.numa_nodes,
            inventory.os) == (
        None, None, None, None, None,
    )
    assert set(inventory.unavailable) >= {"cpu_model", "sockets", "cores_physical", "memory_total_bytes", "numa_nodes",
                                          "os"}
    assert inventory.unavailable["memory_total_bytes"] == "no MemTotal in /proc/meminfo"
    # what does not come from files is still there
    assert inventory.kernel == platform.release() and inventory.hostname
