"""Reading YAML safely: the one place config files are read.

    read_yaml("config/config.yaml")    # a dict, or a ConfigError naming the file and the problem
    parse_yaml(text)                   # YAML text; errors are yaml.YAMLError (YAMLRefused for ours)

`SafeConfigLoader` is yaml.SafeLoader that also refuses duplicate mapping keys (YAML would keep
the last value silently) and aliases that expand beyond `MAX_ALIAS_NODES` nodes (a "billion
laughs"); `read_yaml` refuses folders, oversized, binary and non-UTF-8 files, by name.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import yaml

from .errors import ConfigError

#: Most YAML nodes that aliases (``*name``) may expand to in one file (a few anchors in a normal
#: config expand to tens of nodes; a "billion laughs" expands to 10^9).
MAX_ALIAS_NODES = 10_000

#: Largest config file read (bytes): a config is a few kilobytes.
MAX_CONFIG_BYTES = 4 * 1024 * 1024


class YAMLRefused(yaml.YAMLError):
    """A YAML construct the config loader refuses (duplicate key, alias expansion beyond the budget)."""


class SafeConfigLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses duplicate mapping keys and aliases that expand beyond
    `MAX_ALIAS_NODES` nodes (counted while composing, before anything is expanded)."""

    def __init__(self, stream):
        super().__init__(stream)
        self._alias_nodes = 0
        self._node_sizes: Dict[int, int] = {}

    def _size(self, node) -> int:
        """Nodes in `node` with every alias expanded (memoised: shared nodes are counted once each)."""
        key = id(node)
        if key not in self._node_sizes:
            if isinstance(node, yaml.SequenceNode):
                size = 1 + sum(self._size(n) for n in node.value)
            elif isinstance(node, yaml.MappingNode):
                size = 1 + sum(self._size(k) + self._size(v) for k, v in node.value)
            else:
                size = 1
            self._node_sizes[key] = size
        return self._node_sizes[key]

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            target = self.anchors.get(event.anchor)
            if target is not None:
                self._alias_nodes += self._size(target)
                if self._alias_nodes > MAX_ALIAS_NODES:
                    raise YAMLRefused(
                        f"aliases expand to more than {MAX_ALIAS_NODES:,} YAML nodes (alias *{event.anchor} "
                        f"on line {event.start_mark.line + 1}); a config needs only a few anchors: write the values out")
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: Dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *defaults` merges; keys written after it override on purpose
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:
                    continue  # an unhashable key: construct_mapping itself refuses it
                line = key_node.start_mark.line + 1
                if first is not None:
                    raise YAMLRefused(f"duplicate key '{key}' on line {line} (first given on line {first}); "
                                      "YAML would silently keep only the last value: give each key once")
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


SafeConfigLoader.add_constructor("tag:yaml.org,2002:map", SafeConfigLoader.construct_yaml_map)


def parse_yaml(text: str, name: str = "<string>") -> Any:
    """YAML text parsed with `SafeConfigLoader`; errors are `yaml.YAMLError`."""
    loader = SafeConfigLoader(text)
    loader.name = name
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def read_yaml(path) -> Any:
    """The YAML file at `path` (the one place config files are read), or a ConfigError naming it:
    duplicate keys, alias bombs, binary or oversized files and folders are refused."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"config file {p} is a folder; give a YAML file (e.g. config/config.yaml)")
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist or is not a file")
    size = p.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {p} has {size:,} bytes; a config has a few kilobytes "
                          f"(at most {MAX_CONFIG_BYTES:,} bytes are read)")
    data = p.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {p} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start} "
                          "cannot be decoded); is it a binary file? Give a YAML file") from None
    if "\x00" in text:
        raise ConfigError(f"config file {p} contains NUL bytes; is it a binary file? Give a YAML file")
    try:
        return parse_yaml(text, str(p))
    except YAMLRefused as exc:
        raise ConfigError(f"config file {p}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {p} is not valid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"config file {p} nests lists or mappings too deeply to be a config") from None
