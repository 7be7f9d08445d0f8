"""The command kernel (no Airflow import): ``create_kernel``, commands, ports and plugins.

Names load lazily through :func:`~airflow_workflow_engine._lazy.lazy_exports`: importing
``airflow_workflow_engine.kernel.status`` loads the status enum alone, not the kernel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_workflow_engine._lazy import lazy_exports

if TYPE_CHECKING:
    from airflow_workflow_engine.kernel import commands
    from airflow_workflow_engine.kernel.executor import LocalExecutor, RoutingExecutor
    from airflow_workflow_engine.kernel.kernel import (
        DictRegistry,
        Kernel,
        KernelSettings,
        SystemClock,
        create_kernel,
    )
    from airflow_workflow_engine.kernel.plugins import (
        Plugin,
        PluginRunner,
        create_plugin_runner,
        define_plugin,
    )
    from airflow_workflow_engine.kernel.status import Status

__all__ = [
    "DictRegistry",
    "Kernel",
    "KernelSettings",
    "LocalExecutor",
    "Plugin",
    "PluginRunner",
    "RoutingExecutor",
    "Status",
    "SystemClock",
    "commands",
    "create_kernel",
    "create_plugin_runner",
    "define_plugin",
]

_EXPORTS: dict[str, str] = {
    "commands": "commands",
    "LocalExecutor": "executor",
    "RoutingExecutor": "executor",
    "DictRegistry": "kernel",
    "Kernel": "kernel",
    "KernelSettings": "kernel",
    "SystemClock": "kernel",
    "create_kernel": "kernel",
    "Plugin": "plugins",
    "PluginRunner": "plugins",
    "create_plugin_runner": "plugins",
    "define_plugin": "plugins",
    "Status": "status",
}

__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS, relative=True, public=__all__)
