"""The commerce service's composition root: settings, the runtime that wires everything, the CLI."""
