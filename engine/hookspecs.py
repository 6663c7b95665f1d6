"""Every extension point of ``engine``, documented.

A plugin is any module or object with functions decorated by :data:`hookimpl` whose names match the specs below.
Built-in components register through exactly these hooks, the same way third-party plugins do.

Registration hooks use a callback: the host passes ``register`` and the plugin calls it once per component class.
This lets the host record which plugin registered what, and reject duplicate names with both plugins named.

A component class must define:

* ``name`` (class attribute, ``str``): the name used in ``pipeline.yaml``.
* ``Config`` (nested ``pydantic.BaseModel``, ``extra="forbid"``): its typed options.
* ``from_config(cls, config, **context)`` (classmethod): builds an instance from a validated ``Config``. The
  context holds what only the task knows (sizes of the data, the device...). :class:`engine.components.Component`
  gives a default that passes the config fields as keyword arguments.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("engine")
hookimpl = pluggy.HookimplMarker("engine")


# ---------------------------------------------------------------------------------------------------------------
# Registration: components
# ---------------------------------------------------------------------------------------------------------------


@hookspec
def register_encoders(register):
    """Register encoder classes.

    Called once, when the registry is first built (:func:`engine.plugins.get_registry`).

    Args:
        register: ``register(cls)``; call it once per encoder class. An encoder is a ``torch.nn.Module`` that turns
            a batch of one entity type (users, items, sequences, records, a field of a record) into vectors
            ``[B, D]``. Graph encoders take the graph once and return all node embeddings.

    Returns:
        Nothing; the return value is ignored.
    """


@hookspec
def register_objectives(register):
    """Register objective (loss) classes.

    Called once, when the registry is first built.

    Args:
        register: ``register(cls)``; call it once per objective class. An objective is a ``torch.nn.Module`` over
            embeddings (it never holds an encoder) whose ``forward`` returns an
            :class:`engine.components.ObjectiveOutput`: the scalar ``loss`` and its named ``parts``.

    Returns:
        Nothing; the return value is ignored.
    """


@hookspec
def register_augmenters(register):
    """Register augmenter classes.

    Called once, when the registry is first built.

    Args:
        register: ``register(cls)``; call it once per augmenter class. An augmenter produces a view: graph
            augmenters work on the edge set (edge/node dropout, random walks, learned masks) or on embeddings
            (noise); sequence augmenters work on item sequences.

    Returns:
        Nothing; the return value is ignored.
    """


@hookspec
def register_data_sources(register):
    """Register data source classes.

    Called once, when the registry is first built.

    Args:
        register: ``register(cls)``; call it once per data source class. A data source reads one format into
            polars frames with a declared schema (``load() -> engine.data.InteractionData`` for interaction
            data) and fails with :class:`engine.errors.DataError` when the schema is not met.

    Returns:
        Nothing; the return value is ignored.
    """


@hookspec
def register_tasks(register):
    """Register task classes (one per family: graph CF, sequential recommendation, record linkage...).

    Called once, when the registry is first built.

    Args:
        register: ``register(cls)``; call it once per task class. A task subclasses :class:`engine.task.Task`:
            it wires data, model and objectives, knows its evaluation protocol and its export graph.

    Returns:
        Nothing; the return value is ignored.
    """


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------


@hookspec
def register_commands(cli):
    """Add subcommands to the ``engine`` command line.

    Called once, when ``engine`` starts, after the built-in commands exist.

    Args:
        cli: the root ``click.Group``; decorate new commands with ``@cli.command()``. Import heavy modules inside
            the command body so that ``engine --help`` stays instant.

    Returns:
        Nothing; the return value is ignored.
    """
