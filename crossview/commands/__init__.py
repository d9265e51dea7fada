"""Sub-commands of the ``crossview`` CLI (one module each, see ``crossview.cli``)."""
