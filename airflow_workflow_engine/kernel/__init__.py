"""The command kernel (no Airflow import): ``create_kernel``, commands, ports and plugins."""

from __future__ import annotations

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
