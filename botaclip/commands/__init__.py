"""Command groups of the `botaclip` CLI, one module per area; `cli.py` registers `COMMANDS` in this order."""

from botaclip.commands.demo import demo
from botaclip.commands.index import index
from botaclip.commands.sample import sample
from botaclip.commands.sdm import sdm
from botaclip.commands.store import sql_cmd, store_group
from botaclip.commands.train import train
from botaclip.commands.weights import weights

# Pipeline order: make data, embed it, adapt the model, query, model species, fetch weights, all at once.
COMMANDS = [sample, index, train, store_group, sql_cmd, sdm, weights, demo]
