"""Names and guilds of the sample region's taxa: real alpine species, invented niches.

The niches (which habitat, which elevation, how wet) are drawn from guild templates that follow what botanists
know of these plants in the western Alps, but they are synthetic: do not use them as ecological facts.
"""

from __future__ import annotations

# Plant guilds: habitat effects on the probit scale for (deciduous_forest, coniferous_forest, meadow,
# alpine_pasture, scree_rock, water, built), elevation optimum range (m), elevation tolerance range (m),
# moisture optimum range (0..1), moisture tolerance range, nutrient effect range, maximum cover range (%).
PLANT_GUILDS: dict[str, dict] = {
    "broadleaf_forest": dict(
        habitat=(0.0, -1.2, -2.6, -4.0, -4.5, -5.0, -3.5), elevation=(900, 1350), tolerance=(220, 350),
        moisture=(0.4, 0.65), moisture_tol=(0.2, 0.3), nutrient=(-0.3, 0.4), cover=(5, 40),
        species=[
            "Fagus sylvatica", "Acer pseudoplatanus", "Fraxinus excelsior", "Corylus avellana", "Anemone nemorosa",
            "Galium odoratum", "Mercurialis perennis", "Hedera helix", "Carex sylvatica", "Lamium galeobdolon",
            "Prenanthes purpurea", "Sanicula europaea", "Paris quadrifolia", "Euphorbia amygdaloides",
            "Viola reichenbachiana", "Frangula alnus",
        ],
    ),
    "conifer_forest": dict(
        habitat=(-1.3, 0.0, -2.6, -1.8, -3.5, -5.0, -3.5), elevation=(1400, 1850), tolerance=(200, 320),
        moisture=(0.35, 0.6), moisture_tol=(0.2, 0.3), nutrient=(-0.5, 0.1), cover=(5, 45),
        species=[
            "Picea abies", "Abies alba", "Larix decidua", "Vaccinium myrtillus", "Vaccinium vitis-idaea",
            "Homogyne alpina", "Luzula sylvatica", "Calamagrostis villosa", "Melampyrum sylvaticum",
            "Lycopodium annotinum", "Oxalis acetosella", "Sorbus aucuparia", "Deschampsia flexuosa",
            "Orthilia secunda",
        ],
    ),
    "meadow": dict(
        habitat=(-2.8, -3.2, 0.0, -1.2, -3.5, -5.0, -1.8), elevation=(850, 1500), tolerance=(250, 400),
        moisture=(0.25, 0.7), moisture_tol=(0.2, 0.3), nutrient=(-0.6, 1.0), cover=(3, 35),
        species=[
            "Arrhenatherum elatius", "Dactylis glomerata", "Trisetum flavescens", "Trifolium pratense",
            "Leucanthemum vulgare", "Centaurea jacea", "Knautia arvensis", "Salvia pratensis", "Lotus corniculatus",
            "Rumex acetosa", "Heracleum sphondylium", "Geranium sylvaticum", "Bromus erectus", "Onobrychis viciifolia",
            "Thymus serpyllum", "Holcus lanatus",
        ],
    ),
    "alpine_pasture": dict(
        habitat=(-4.0, -2.0, -1.4, 0.0, -1.6, -5.0, -3.5), elevation=(1850, 2300), tolerance=(200, 300),
        moisture=(0.3, 0.7), moisture_tol=(0.2, 0.3), nutrient=(-0.6, 0.3), cover=(3, 35),
        species=[
            "Nardus stricta", "Festuca violacea", "Carex sempervirens", "Geum montanum", "Gentiana acaulis",
            "Gentiana lutea", "Pulsatilla alpina", "Alchemilla alpina", "Trifolium alpinum", "Leontodon helveticus",
            "Arnica montana", "Campanula barbata", "Rhododendron ferrugineum", "Vaccinium uliginosum",
            "Viola calcarata", "Ligusticum mutellina", "Soldanella alpina",
        ],
    ),
    "scree": dict(
        habitat=(-4.5, -3.8, -3.8, -1.3, 0.0, -5.0, -3.5), elevation=(2050, 2400), tolerance=(180, 280),
        moisture=(0.2, 0.6), moisture_tol=(0.2, 0.35), nutrient=(-0.6, 0.0), cover=(1, 15),
        species=[
            "Saxifraga oppositifolia", "Saxifraga paniculata", "Silene acaulis", "Ranunculus glacialis",
            "Oxyria digyna", "Linaria alpina", "Doronicum grandiflorum", "Cerastium uniflorum", "Androsace alpina",
            "Geum reptans", "Sempervivum montanum", "Sedum alpestre",
        ],
    ),
    "wetland": dict(
        habitat=(-1.4, -1.4, -0.4, -0.4, -2.8, -1.6, -3.0), elevation=(900, 2100), tolerance=(350, 600),
        moisture=(0.82, 0.95), moisture_tol=(0.1, 0.16), nutrient=(-0.4, 0.4), cover=(3, 40),
        species=[
            "Caltha palustris", "Carex nigra", "Eriophorum angustifolium", "Juncus effusus", "Filipendula ulmaria",
            "Alnus viridis", "Salix purpurea", "Equisetum palustre", "Trichophorum cespitosum", "Petasites hybridus",
        ],
    ),
    "ruderal": dict(
        habitat=(-2.5, -2.8, -0.6, -1.0, -2.5, -5.0, 0.0), elevation=(900, 1700), tolerance=(400, 700),
        moisture=(0.35, 0.65), moisture_tol=(0.25, 0.4), nutrient=(2.0, 3.0), cover=(2, 25),
        species=[
            "Urtica dioica", "Rumex obtusifolius", "Plantago major", "Taraxacum officinale",
            "Chenopodium bonus-henricus", "Poa annua", "Capsella bursa-pastoris", "Artemisia vulgaris",
            "Tussilago farfara", "Lolium perenne",
        ],
    ),
    "generalist": dict(
        habitat=(-0.9, -0.9, 0.0, 0.0, -2.2, -5.0, -1.4), elevation=(1100, 1900), tolerance=(500, 800),
        moisture=(0.4, 0.6), moisture_tol=(0.3, 0.45), nutrient=(-0.3, 0.5), cover=(2, 20),
        species=[
            "Achillea millefolium", "Ranunculus acris", "Campanula rotundifolia", "Anthoxanthum odoratum",
            "Deschampsia cespitosa", "Potentilla erecta", "Hypericum maculatum", "Prunella vulgaris",
        ],
    ),
}

# Butterflies: host plants (larval food), response to openness, elevation optimum and tolerance (m).
BUTTERFLIES: dict[str, dict] = {
    "Parnassius apollo": dict(hosts=("Sempervivum montanum", "Sedum alpestre"), openness="open", elevation=(1900, 350)),
    "Erebia epiphron": dict(hosts=("Nardus stricta", "Festuca violacea"), openness="open", elevation=(2050, 250)),
    "Erebia aethiops": dict(hosts=("Calamagrostis villosa", "Deschampsia flexuosa"), openness="edge",
                            elevation=(1400, 350)),
    "Boloria pales": dict(hosts=("Viola calcarata",), openness="open", elevation=(2150, 250)),
    "Phengaris arion": dict(hosts=("Thymus serpyllum",), openness="open", elevation=(1300, 400)),
    "Lycaena hippothoe": dict(hosts=("Rumex acetosa",), openness="open", elevation=(1300, 450)),
    "Polyommatus icarus": dict(hosts=("Lotus corniculatus", "Trifolium pratense"), openness="open",
                               elevation=(1100, 450)),
    "Aglais urticae": dict(hosts=("Urtica dioica",), openness="open", elevation=(1200, 600)),
    "Papilio machaon": dict(hosts=("Heracleum sphondylium", "Ligusticum mutellina"), openness="open",
                            elevation=(1500, 600)),
    "Euphydryas aurinia": dict(hosts=("Gentiana acaulis",), openness="open", elevation=(2050, 250)),
    "Gonepteryx rhamni": dict(hosts=("Frangula alnus",), openness="edge", elevation=(1100, 350)),
    "Boloria euphrosyne": dict(hosts=("Viola reichenbachiana",), openness="edge", elevation=(1200, 400)),
}

# Soil trophic groups: mean abundance per sample, habitat effects on the log scale (habitat order as above),
# elevation optimum and tolerance (m), moisture and nutrient effects (log scale per unit).
SOIL_GROUPS: dict[str, dict] = {
    "bacterivore_nematodes": dict(mean=180, habitat=(0.0, -0.4, 0.5, 0.2, -1.2, -2.0, -0.8), elevation=(1200, 700),
                                  moisture=1.2, nutrient=0.8),
    "fungivore_nematodes": dict(mean=70, habitat=(0.5, 0.7, -0.3, -0.2, -1.2, -2.0, -1.0), elevation=(1500, 600),
                                moisture=0.4, nutrient=-0.2),
    "plant_feeding_nematodes": dict(mean=110, habitat=(-0.6, -0.8, 0.6, 0.4, -1.5, -2.0, -0.8),
                                    elevation=(1300, 600), moisture=0.2, nutrient=0.5),
    "omnivore_nematodes": dict(mean=35, habitat=(0.3, 0.2, 0.1, 0.2, -1.0, -2.0, -1.5), elevation=(1400, 700),
                               moisture=0.6, nutrient=-0.5),
    "predatory_nematodes": dict(mean=12, habitat=(0.4, 0.3, -0.2, 0.0, -1.0, -2.0, -1.5), elevation=(1100, 500),
                                moisture=0.8, nutrient=-0.7),
    "collembola": dict(mean=60, habitat=(0.5, 0.6, -0.1, 0.0, -0.8, -2.0, -1.2), elevation=(1600, 700),
                       moisture=1.0, nutrient=0.0),
    "oribatid_mites": dict(mean=90, habitat=(0.2, 0.8, -0.4, 0.3, -0.6, -2.0, -1.5), elevation=(1800, 600),
                           moisture=0.3, nutrient=-0.4),
    "earthworms": dict(mean=8, habitat=(0.2, -0.6, 0.8, 0.0, -2.0, -2.0, -0.5), elevation=(1000, 450),
                       moisture=0.9, nutrient=0.9),
}
