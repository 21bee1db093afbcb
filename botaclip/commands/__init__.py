"""Command groups of the `botaclip` CLI, one module per area; `cli.py` registers `COMMANDS` in this order.

Each entry names the module and attribute of a command, imported only when that command runs (or when a help
page lists it): a `botaclip store similar` does not pay for importing torch, scipy or the SDM engines.
"""

# Pipeline order: make data, embed it, adapt the model, query, model species, fetch weights, all at once.
COMMANDS = {
    "sample": ("botaclip.commands.sample", "sample"),
    "index": ("botaclip.commands.index", "index"),
    "train": ("botaclip.commands.train", "train"),
    "store": ("botaclip.commands.store", "store_group"),
    "sql": ("botaclip.commands.store", "sql_cmd"),
    "sdm": ("botaclip.commands.sdm", "sdm"),
    "map": ("botaclip.commands.map", "map_cmd"),
    "weights": ("botaclip.commands.weights", "weights"),
    "demo": ("botaclip.commands.demo", "demo"),
}
