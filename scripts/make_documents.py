"""Write invented news paragraphs as source texts for the summarization demo.

Every document is put together from the tables below: a topic, one of its scenarios (the
main event), one of its templates (the order and structure of the sentences) and random
entities (places, people, organisations, numbers, dates). Templates mix key sentences,
which a good summary keeps, with filler (quotes, history, side details), which it may leave
out. Each row lists its key facts exactly as they appear in the text, so that a grader can
check how many of them a summary kept. All names and places are made up.

Usage:
    python scripts/make_documents.py --out examples/demo/documents.jsonl --n 480 --seed 0

Row format: {"id", "topic", "input_text", "reference", "facts"}.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import sys
from collections import Counter
from pathlib import Path

MIN_WORDS, MAX_WORDS = 90, 220  # length of a document, in words
MIN_SENTENCES, MAX_SENTENCES = 4, 8  # length of a document, in sentences
MAX_REFERENCE_WORDS = 39  # the reference summary stays under 40 words
MIN_FACTS, MAX_FACTS = 3, 5  # key facts listed per document
FILLER = "~"  # in a template: a place for a randomly chosen filler sentence
KEEP_FILLER = 0.7  # chance that a template's filler place is used
MAX_TRIES = 50  # attempts at a valid, unseen document before giving up

# ---------------------------------------------------------------------------------------
# Names. Places are built from a start and an end, so most are invented.
# ---------------------------------------------------------------------------------------

FIRST_NAMES = (
    "Ada", "Amir", "Anika", "Aoife", "Bea", "Callum", "Carys", "Chen", "Dara", "Elif",
    "Emeka", "Farah", "Felix", "Freya", "Gareth", "Greta", "Hana", "Hugo", "Idris", "Ines",
    "Ivo", "Jonas", "Kenji", "Kofi", "Leila", "Lena", "Leon", "Malik", "Mara", "Marta",
    "Mateo", "Nadia", "Niall", "Noor", "Olu", "Owen", "Priya", "Rhys", "Rosa", "Ruth",
    "Sanjay", "Sofia", "Tariq", "Tess", "Tomas", "Ulla", "Viktor", "Wen", "Yusuf", "Zara",
)  # fmt: skip
LAST_NAMES = (
    "Adeyemi", "Ashworth", "Brennan", "Castell", "Dunmore", "Eriksen", "Fairweather",
    "Ferreira", "Garrow", "Haddad", "Hartley", "Iqbal", "Jansen", "Kowalski", "Lindqvist",
    "Marsh", "Moreau", "Nakamura", "Novak", "Okafor", "Osei", "Pellow", "Perez", "Pritchard",
    "Quinn", "Rahman", "Rossiter", "Sato", "Sheridan", "Tembo", "Thorne", "Underwood",
    "Varga", "Whitlock", "Yilmaz", "Zielinski", "Abernethy", "Baptiste", "Coyle", "Delaney",
)  # fmt: skip
PLACE_STARTS = (
    "Ashen", "Bell", "Brin", "Cald", "Corr", "Cran", "Dray", "Ferr", "Gald", "Harl", "Hask",
    "Istel", "Kell", "Lorn", "Marr", "Morv", "Nesh", "Orrin", "Ost", "Penn", "Quell", "Rav",
    "Skel", "Sund", "Tams", "Tarr", "Ulver", "Vask", "Vell", "Wend", "Wyth", "Yarl",
)  # fmt: skip
PLACE_ENDS = (
    "bury", "by", "combe", "dale", "ford", "haven", "holm", "hurst", "ley", "more",
    "mouth", "stead", "thorpe", "ton", "well", "wick",
)  # fmt: skip
RIVERS = (
    "Avel", "Brisk", "Corran", "Fenn", "Ilsey", "Lissa", "Morrow", "Oarn", "Quarl", "Sendle",
    "Tessel", "Wendle",
)  # fmt: skip
REGIONS = (
    "Brinmoor", "Corrandale", "Halmshire", "Kellshire", "Morvane", "Ostvale", "Tarrowdale",
    "Wendshire",
)  # fmt: skip
SAINTS = ("Agnes", "Bride", "Cuthbert", "Hilda", "Luke", "Oswin")
MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)  # fmt: skip
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

# Fillers that fit any topic; a document gets at most one of them.
GENERIC_FILLERS = (
    "{place} is a market town of about {pop} people on the River {river}.",
    "The town grew up around a wool mill that closed in {old_year3}.",
    "The news spread quickly on local social media groups.",
    "{place} lies about an hour's drive from the nearest city.",
    "Local radio covered the story throughout the day.",
    "The town's population has grown steadily since a bypass opened in the 1990s.",
)

# ---------------------------------------------------------------------------------------
# Topics. A slot spec is either a pattern ("{place} Buses", filled from earlier slots) or a
# tuple: ("pick", options), ("count", lo, hi[, unit]) in words or digits, ("num", lo, hi[,
# unit]) in digits, ("money", lo, hi) in thousands of pounds, ("cash", lo, hi[, step]) in
# pounds, ("pct", lo, hi) and ("ordinal", lo, hi). A picked dict sets several slots at once.
# Scenario strings are filled in order and become slots that the templates use; "facts"
# names the slots a good summary should keep (the topic's facts plus the scenario's). A
# scenario may also bring its own "slots", "quotes" and "fillers".
# ---------------------------------------------------------------------------------------

LOCAL_GOVERNMENT = {
    "name": "local government",
    "slots": {
        "council": ("pick", ("{place} Town Council", "{place} District Council")),
        "votes": (
            "pick",
            (
                "seven votes to two",
                "nine votes to four",
                "eleven votes to three",
                "six votes to five",
                "eight votes to one",
                "ten votes to six",
            ),
        ),
        "cost": ("money", 60, 4800),
        "hours": ("pick", ("two", "three", "four")),
        "committee": ("pick", ("transport", "finance", "environment", "planning")),
        "consult": ("count", 120, 2400),
        "spaces": ("count", 30, 140),
        "pct": ("pct", 12, 40),
        "gap": ("money", 300, 2600),
    },
    "facts": ("place", "votes", "month", "cost"),
    "scenarios": (
        {
            "action": "close the old river bridge to cars",
            "key": "river bridge",
            "reason": "inspectors found rust in two of its steel beams last autumn",
            "change": "pedestrians and cyclists will still be able to cross, and a shuttle "
            "bus will run every twenty minutes at peak times",
            "facts": ("key",),
        },
        {
            "action": "build a network of protected cycle lanes",
            "key": "cycle lanes",
            "reason": "the number of people cycling to work has doubled in five years",
            "change": "about {spaces} on-street parking spaces will be removed along the main "
            "shopping streets",
            "facts": ("key",),
        },
        {
            "action": "switch household bin collections from weekly to fortnightly",
            "key": "bin collections",
            "reason": "the cost of running the waste service has risen by {pct} in two years",
            "change": "every household will be given a larger recycling box free of charge",
            "facts": ("key",),
        },
        {
            "action": "turn the empty market hall into a community centre",
            "key": "market hall",
            "reason": "the building has stood unused for more than a decade",
            "change": "the ground floor will host a weekly market, and the upper rooms will be "
            "let to local clubs",
            "facts": ("key",),
        },
        {
            "action": "raise parking charges in the town centre by fifty pence an hour",
            "key": "parking charges",
            "reason": "the council faces a gap of {gap} in next year's budget",
            "change": "blue badge holders and residents with permits will not pay the higher rate",
            "facts": ("key",),
        },
        {
            "action": "plant street trees along every main road",
            "key": "street trees",
            "reason": "summer temperatures in the town centre are now often several degrees "
            "higher than in nearby villages",
            "change": "residents will be able to sponsor a tree and choose its species from "
            "a short list",
            "facts": ("key",),
        },
    ),
    "templates": (
        (
            "Councillors in {place} voted on {weekday} to {action}, a change due to take "
            "effect in {month}.",
            "The decision was carried by {votes} after a debate that lasted more than {hours} "
            "hours.",
            FILLER,
            "Officials said the plan, which will cost about {cost}, became necessary because "
            "{reason}.",
            "Under the scheme, {change}.",
            FILLER,
        ),
        (
            '"{quote}," said councillor {person}, who chairs the {committee} committee.',
            "{person_last} was speaking after {council} voted by {votes} to {action}.",
            "The measure comes into force in {month} and is expected to cost around {cost}.",
            FILLER,
            "Council officers told the meeting that {reason}.",
            "{change}.",
        ),
        (
            FILLER,
            "Council officers have pointed out for months that {reason}.",
            "On {weekday} evening, {council} finally acted, voting by {votes} to {action}.",
            "The change begins in {month} and has been given a budget of {cost}.",
            "{change}.",
            FILLER,
        ),
    ),
    "references": (
        "{place} councillors voted by {votes} to {action} from {month}, at a cost of about {cost}.",
        "{council} has voted by {votes} to {action} from {month}, a plan costing about {cost}.",
    ),
    "quotes": (
        "This was not an easy choice, but it is the right one for the town",
        "We have talked about this for years, and tonight we finally made a decision",
        "People will need time to adjust, and we will listen to their concerns",
        "I understand why some residents are worried, but doing nothing was not an option",
    ),
    "fillers": (
        "The council chamber was unusually full, with several residents standing at the back.",
        "Opposition members asked for the vote to be delayed until after the summer, but the "
        "request was rejected.",
        "A public consultation earlier in the year drew {consult} written responses.",
        '"I just hope they keep us informed," said {person2}, a shopkeeper who watched the '
        "debate from the public gallery.",
        "The same meeting approved minor repairs to the bandstand in {place2} Park.",
        "{place} has had its own council since {old_year}, when it was granted a town charter.",
    ),
}

SCIENCE = {
    "name": "science",
    "slots": {
        "institution": (
            "pick",
            ("University of {place}", "{place} Institute of Science", "{place} Research Centre"),
        ),
        "journal": (
            "pick",
            (
                "the {region} Science Review",
                "Research Notes",
                "the Journal of Applied Research",
                "Northern Research Reports",
            ),
        ),
        "duration": ("pick", ("two years", "eighteen months", "three summers", "a full year")),
        "funder": ("pick", ("the {region} Research Trust", "the {person3_last} Foundation")),
        "grant": ("money", 40, 900),
        "students": ("count", 3, 12),
        "dist": ("num", 150, 420, "kilometres"),
        "pct": ("pct", 12, 65),
        "mins": ("num", 25, 70, "minutes"),
    },
    "facts": ("institution", "person"),
    "scenarios": (
        {
            "slots": {"n": ("count", 20, 60)},
            "sample": "{n} young sea turtles",
            "method": "tagged {sample} with small radio trackers",
            "finding": "the turtles travel much farther in their first month than expected, "
            "some more than {dist}",
            "use": "protect feeding grounds along the coast",
            "background": "Little is known about where young turtles go after they leave the "
            "beach where they hatched",
            "short": "found that young sea turtles travel up to {dist} in their first month",
            "facts": ("sample", "dist"),
        },
        {
            "slots": {"n": ("count", 30, 180)},
            "sample": "{n} honeybee colonies",
            "method": "monitored {sample} on farms across the region",
            "finding": "colonies next to strips of wildflowers produced {pct} more honey than "
            "those beside bare field edges",
            "use": "change how farmers manage the edges of their fields",
            "background": "Beekeepers have reported weaker colonies across the region for "
            "several years",
            "short": "found that bee colonies near wildflower strips made {pct} more honey",
            "facts": ("sample", "pct"),
        },
        {
            "slots": {"n": ("count", 12, 80)},
            "sample": "soil from {n} farms",
            "method": "collected {sample} and grew the bacteria living in it",
            "finding": "one previously unknown bacterium broke down {pct} of a common plastic "
            "film within six weeks",
            "use": "deal with plastic waste on farms",
            "background": "Thin plastic sheeting is widely used on farms and is hard to recycle",
            "short": "found a bacterium that broke down {pct} of a common plastic film in six "
            "weeks",
            "facts": ("sample", "pct"),
        },
        {
            "slots": {"n": ("num", 120, 900)},
            "sample": "{n} teenagers",
            "method": "followed {sample} who wore sleep trackers",
            "finding": "those who used phones after ten at night slept on average {mins} less "
            "than those who did not",
            "use": "schools and parents give better advice about screens",
            "background": "Doctors have long suspected that late-night screen use affects "
            "sleep, but good data have been scarce",
            "short": "found that teenagers who used phones late at night slept {mins} less",
            "facts": ("sample", "mins"),
        },
        {
            "slots": {"n": ("num", 40, 300), "pct": ("pct", 80, 96)},
            "sample": "{n} test cells",
            "method": "tested a salt-based battery material in {sample}",
            "finding": "the cells kept {pct} of their capacity after a thousand charges",
            "use": "make cheaper batteries for storing solar power",
            "background": "Most rechargeable batteries rely on lithium, which is expensive "
            "and difficult to mine",
            "short": "showed that a salt-based battery kept {pct} of its capacity after a "
            "thousand charges",
            "facts": ("sample", "pct"),
        },
        {
            "slots": {"n": ("count", 20, 90)},
            "sample": "{n} sites",
            "method": "recorded bat calls at {sample} across the county",
            "finding": "bat activity rose by {pct} where street lights were dimmed after midnight",
            "use": "plan street lighting that is kinder to wildlife",
            "background": "Bright street lighting is thought to disturb many animals that "
            "fly at night",
            "short": "found that bat activity rose {pct} where street lights were dimmed",
            "facts": ("sample", "pct"),
        },
    ),
    "templates": (
        (
            "Researchers at the {institution} {method}, and the results have surprised them.",
            "The study found that {finding}.",
            FILLER,
            "The work was led by {person} and published in {month} in {journal}.",
            "{person_last} said the findings could help {use}.",
            FILLER,
        ),
        (
            '"{quote}," said {person}, who led a new study at the {institution}.',
            "Over {duration}, the team {method}.",
            "They found that {finding}.",
            FILLER,
            "The results appear in the {month} issue of {journal}.",
            "The team now hopes the work will help {use}.",
        ),
        (
            "{background}.",
            "A team at the {institution}, led by {person}, has now {method}.",
            "According to the study, {finding}.",
            FILLER,
            "{person_last} said the results could help {use}, although more work is needed.",
            "Funding came from {funder}, which gave {grant} to the project.",
            FILLER,
        ),
    ),
    "references": (
        "Researchers at the {institution}, led by {person}, {short}.",
        "A study led by {person} at the {institution} {short}.",
    ),
    "quotes": (
        "We expected a small effect, but the numbers were far bigger than we thought",
        "This is only a first step, and we need to repeat it on a larger scale",
        "Nobody had looked at this question carefully before",
        "The data were clearer than anything we had hoped for",
    ),
    "fillers": (
        "The team included {students} students on summer placements.",
        "Similar studies elsewhere have produced mixed results.",
        "Some of the equipment was built by the team in their own workshop to save money.",
        "{person2}, a scientist who was not involved in the research, called the results "
        '"interesting but early".',
        "The {institution} opened in {old_year} and has a long history of research.",
        "The researchers have made their data freely available for others to check.",
    ),
}

BUSINESS = {
    "name": "business",
    "slots": {
        "_industry": (
            "pick",
            (
                {"industry": "food maker", "product": "frozen meals", "suffix": "Foods"},
                {"industry": "furniture maker", "product": "office chairs", "suffix": "Furniture"},
                {
                    "industry": "engineering firm",
                    "product": "wind turbine parts",
                    "suffix": "Engineering",
                },
                {
                    "industry": "clothing company",
                    "product": "outdoor jackets",
                    "suffix": "Outfitters",
                },
                {"industry": "brewery", "product": "bottled beer", "suffix": "Brewing"},
                {"industry": "bicycle maker", "product": "electric bikes", "suffix": "Cycles"},
            ),
        ),
        "company": ("pick", ("{person3_last} {suffix}", "{region} {suffix}")),
        "rival": ("pick", ("{person4_last} {suffix}", "{place2} {suffix}")),
        "staff": ("num", 180, 2400),
        "sites": ("pick", ("three", "four", "five", "six")),
        "jobs": ("count", 25, 400, "jobs"),
        "pct": ("pct", 4, 31),
        "amount": ("money", 900, 48000),
        "countries": ("count", 4, 30),
    },
    "facts": ("company", "place"),
    "scenarios": (
        {
            "event": "will open a new factory on the edge of {place2}, creating {jobs}",
            "reason": "strong demand for its {product} from buyers abroad",
            "consequence": "building work is due to start in {month}, and the first staff "
            "should be hired within a year",
            "short": "will open a factory in {place2}, creating {jobs}",
            "facts": ("place2", "jobs"),
            "quotes": (
                "This is a proud day for everyone who works here",
                "We have grown up in this area and we want to keep growing here",
            ),
        },
        {
            "event": "will cut {jobs} at its main factory",
            "reason": "a steep fall in orders for its {product} over the past two years",
            "consequence": "union representatives will meet managers in {month} to discuss "
            "voluntary redundancies",
            "short": "will cut {jobs} after a fall in orders, with talks due in {month}",
            "facts": ("jobs", "month"),
            "quotes": (
                "This is the hardest announcement I have had to make",
                "We will do everything we can to support the people affected",
            ),
        },
        {
            "event": "made a profit of {amount} last year, up {pct}",
            "reason": "strong sales of its {product} in new markets",
            "consequence": "staff will receive a one-off bonus in {month}, and the firm plans "
            "to create {jobs}",
            "short": "made a profit of {amount} last year, up {pct}",
            "facts": ("amount", "pct"),
            "quotes": (
                "The whole team deserves credit for a remarkable year",
                "We have worked hard for this, and we intend to share the rewards",
            ),
        },
        {
            "event": "has agreed to buy its smaller rival {rival} for {amount}",
            "reason": "the need to grow quickly in a crowded market",
            "consequence": "the deal still needs approval from regulators and is expected to "
            "be completed in {month}",
            "short": "has agreed to buy rival {rival} for {amount}",
            "facts": ("rival", "amount"),
            "quotes": (
                "Bringing the two businesses together makes us both stronger",
                "We have admired their work for a long time",
            ),
        },
        {
            "workforce": "{staff} staff",
            "event": "will move its {workforce} to a four-day working week without cutting pay",
            "reason": "a six-month trial in which output rose by {pct}",
            "consequence": "the change starts in {month} and will be reviewed after a year",
            "short": "will move its {workforce} to a four-day week without cutting pay",
            "facts": ("workforce", "pct"),
            "quotes": (
                "People came back on Mondays with more energy, and it showed",
                "We were sceptical at first, but the results spoke for themselves",
            ),
        },
    ),
    "templates": (
        (
            "{company}, the {industry} based in {place}, said on {weekday} that it {event}.",
            "Chief executive {person} said the news reflected {reason}.",
            FILLER,
            "{consequence}.",
            "The company employs about {staff} people at {sites} sites.",
            FILLER,
        ),
        (
            '"{quote}," said {person}, chief executive of {company}.',
            "The {industry} from {place} announced this week that it {event}.",
            "According to the company, the announcement reflects {reason}.",
            FILLER,
            "{consequence}.",
        ),
        (
            FILLER,
            "{company} was founded in {place} in {old_year} and now employs about {staff} people.",
            "On {weekday}, the firm said it {event}.",
            "{person}, its chief executive, said the news reflected {reason}.",
            "{consequence}.",
            FILLER,
        ),
    ),
    "references": ("{company} of {place} {short}.",),
    "quotes": ("We are confident about the future of this business",),
    "fillers": (
        "The company began as a small workshop above a shop on {place}'s high street.",
        "The company's products are sold in {countries} countries.",
        "Local business leaders said the news would be watched closely across {region}.",
        "The firm won a regional award for its apprenticeship scheme in {recent_year}.",
        '"Everyone in town knows someone who works there," said {person2}, who runs a cafe '
        "opposite the main gate.",
    ),
}

SPORT = {
    "name": "sport",
    "slots": {
        "team": (
            "pick",
            (
                "{place} Rovers",
                "{place} United",
                "{place} Athletic",
                "{place} Town",
                "{place} Harriers",
            ),
        ),
        "opponent": (
            "pick",
            ("{place2} City", "{place2} Wanderers", "{place2} Rangers", "FC {place2}"),
        ),
        "score": ("pick", ("2-0", "2-1", "3-1", "3-2", "4-1", "3-0", "4-2")),
        "venue": ("pick", ("{person3_last} Park", "{river} Road", "Mill Lane")),
        "crowd": ("num", 1800, 14000),
        "minute": ("ordinal", 52, 89),
        "competition": ("pick", ("{region} Cup", "{region} Challenge Trophy", "{region} Shield")),
        "division": ("pick", ("{region} Premier Division", "Northern Counties League")),
        "gap_years": ("count", 12, 60),
        "streak": ("count", 12, 25),
        "points": ("count", 3, 9),
        "coaches": ("count", 3, 20),
        "fan_years": ("count", 8, 50),
    },
    "facts": ("team", "opponent", "score", "person"),
    "scenarios": (
        {
            "event": "won the {competition} for the first time in {gap_years} years, beating "
            "{opponent} {score} in the final",
            "consequence": "the team will show off the trophy from an open-top bus in {place} "
            "on {weekday2}",
            "short": "won the {competition}, beating {opponent} {score}",
        },
        {
            "event": "clinched promotion to the {division} with a {score} win over {opponent}",
            "consequence": "next season the club will play in the {division} for the first "
            "time since {old_year2}",
            "short": "won promotion with a {score} win over {opponent}",
        },
        {
            "event": "avoided relegation on the last day of the season with a {score} victory "
            "against {opponent}",
            "consequence": "the result keeps the club in the division for another season, "
            "while results elsewhere sent two rivals down",
            "short": "avoided relegation with a {score} win against {opponent}",
        },
        {
            "event": "stretched their unbeaten run to {streak} matches with a {score} win "
            "against {opponent}",
            "consequence": "{team} now sit {points} points clear at the top of the table",
            "short": "stretched their unbeaten run to {streak} games by beating {opponent} {score}",
        },
    ),
    "templates": (
        (
            "{team} {event} on {weekday}.",
            "{person} scored twice in front of a crowd of {crowd} at {venue}.",
            FILLER,
            '"{quote}," said manager {person2}.',
            "{consequence}.",
            FILLER,
        ),
        (
            "A crowd of {crowd} watched at {venue} on {weekday} as {team} {event}.",
            "{person} scored twice, including the deciding goal in the {minute} minute.",
            FILLER,
            "Manager {person2}, who took charge of the club in {recent_year}, praised the "
            "players for their patience.",
            "{consequence}.",
            FILLER,
        ),
        (
            FILLER,
            "On {weekday}, {team} {event}.",
            "{person} was the star of the afternoon, scoring twice before being replaced to a "
            "standing ovation.",
            "{consequence}.",
            '"{quote}," said {person2}, the team\'s manager.',
            "Attendance at {venue} was {crowd}, the highest of the season.",
            FILLER,
        ),
    ),
    "references": (
        "{team} {short}, with {person} scoring twice.",
        "Thanks to two goals from {person}, {team} {short}.",
    ),
    "quotes": (
        "I am so proud of these players, they never gave up",
        "We rode our luck at times, but nobody can say we did not deserve it",
        "The supporters carried us through the last twenty minutes",
    ),
    "fillers": (
        "The club was founded in {old_year} by workers from the town's brickworks.",
        "Both teams wore black armbands in memory of a former club president.",
        "Heavy rain before kick-off left parts of the pitch waterlogged.",
        "Tickets sold out within a day of going on sale.",
        "The visiting supporters travelled in {coaches} coaches.",
        '"It was worth every penny of the ticket," said {person4}, who has followed the club '
        "for {fan_years} years.",
    ),
}

WEATHER = {
    "name": "weather and environment",
    "slots": {
        "agency": ("pick", ("{region} Weather Office", "{region} Environment Agency")),
        "speed": ("num", 90, 150, "kilometres an hour"),
        "temp": ("num", 34, 41, "degrees"),
        "pct": ("pct", 28, 55),
        "area": ("num", 120, 900, "hectares"),
        "homes": ("num", 200, 6000, "homes"),
        "households": ("num", 2000, 30000, "households"),
        "flood_homes": ("num", 20, 300, "homes"),
        "schools": ("count", 4, 30, "schools"),
        "people": ("num", 30, 400, "people"),
        "resident_years": ("count", 12, 70),
    },
    "facts": ("place", "weekday"),
    "scenarios": (
        {
            "cause": "a storm",
            "event": "brought winds of up to {speed}",
            "impact": "about {homes} lost power overnight, and several roads were "
            "blocked by fallen trees",
            "advice": "avoid travelling unless necessary",
            "outlook": "calmer weather by the weekend",
            "short": "brought winds of up to {speed} and cut power to {homes}",
            "facts": ("speed", "homes"),
        },
        {
            "cause": "heavy rain",
            "event": "sent the River {river} over its banks",
            "impact": "water entered {flood_homes}, and the main road into town was closed",
            "advice": "keep away from the riverbank",
            "outlook": "more showers but no further heavy rain for now",
            "short": "flooded {flood_homes} as the River {river} burst its banks",
            "facts": ("river", "flood_homes"),
        },
        {
            "cause": "a heatwave",
            "event": "pushed temperatures to {temp}",
            "impact": "hospitals reported a rise in visits from older patients, and {schools} "
            "closed early",
            "advice": "drink plenty of water and stay out of the midday sun",
            "outlook": "temperatures to stay above thirty degrees for several more days",
            "short": "pushed temperatures to {temp}, and {schools} closed early",
            "facts": ("temp", "schools"),
        },
        {
            "cause": "a dry spring",
            "event": "left local reservoirs at {pct} of their usual level",
            "impact": "a hosepipe ban will start on {date} for about {households}",
            "advice": "use water sparingly",
            "outlook": "little rain for at least another fortnight",
            "short": "left reservoirs at {pct} of their usual level, with a hosepipe ban from "
            "{date}",
            "facts": ("pct", "date"),
        },
        {
            "cause": "a wildfire",
            "event": "burned {area} of moorland",
            "impact": "firefighters moved {people} from nearby farms as a precaution",
            "advice": "keep windows closed because of the smoke",
            "outlook": "a change in the wind that should help fire crews",
            "short": "burned {area} of moorland, and {people} were moved from their homes",
            "facts": ("area", "people"),
        },
    ),
    "templates": (
        (
            "{cause} has {event} around {place}, the {agency} said on {weekday}.",
            "{impact}.",
            FILLER,
            "{person}, a spokesperson for the agency, said people should {advice}.",
            "Forecasters expect {outlook}.",
            FILLER,
        ),
        (
            "Residents of {place} were told to {advice} on {weekday} after {cause} {event}.",
            "{impact}.",
            '"{quote}," said {person2}, who has lived in the area for {resident_years} years.',
            FILLER,
            "The {agency} said it was watching the situation closely.",
            "Forecasters expect {outlook}.",
        ),
        (
            FILLER,
            "The {agency} confirmed on {weekday} that {cause} had {event} around {place}.",
            "{impact}.",
            FILLER,
            "People were advised to {advice}.",
            "The outlook is for {outlook}.",
            FILLER,
        ),
    ),
    "references": ("In {place}, {cause} {short}, the {agency} said on {weekday}.",),
    "quotes": (
        "I have never seen anything like it in all my years here",
        "We were lucky, but some of our neighbours were not",
        "You could see it coming and there was nothing to do but wait",
    ),
    "fillers": (
        "{place} last saw conditions like this in {old_year2}, according to records kept at "
        "the town library.",
        "Farmers said it was too early to tell how crops would be affected.",
        "The town's summer fair, due to take place at the weekend, may be postponed.",
        "Volunteers set up a help desk in the community centre to answer questions from residents.",
        "Insurance companies have asked customers to photograph any damage before clearing up.",
        "The {agency} publishes updated warnings on its website every three hours.",
    ),
}

HEALTH = {
    "name": "health",
    "slots": {
        "saint": ("pick", SAINTS),
        "hospital": (
            "pick",
            ("{place} General Hospital", "{place} Royal Infirmary", "St {saint}'s Hospital"),
        ),
        "role": ("pick", ("medical director", "chief nurse", "head of emergency care")),
        "staff": ("count", 6, 20),
        "pct": ("pct", 15, 40),
        "k": ("count", 10, 60),
        "peak": ("count", 40, 160),
        "amount": ("money", 900, 3800),
    },
    "facts": ("hospital", "month"),
    "scenarios": (
        {
            "slots": {"n": ("num", 60, 180, "patients")},
            "event": "opened a walk-in clinic for minor injuries",
            "detail": "the clinic can treat up to {n} a day and is run by {staff} nurses",
            "consequence": "managers hope it will ease pressure on the emergency department, "
            "where waits have grown",
            "short": "opened a walk-in clinic for minor injuries that can treat up to {n} a day",
            "facts": ("n",),
        },
        {
            "slots": {"mins": ("num", 70, 150, "minutes")},
            "event": "cut average waiting times in its emergency department by {pct}",
            "detail": "the average wait is now {mins}, down from more than three hours last winter",
            "consequence": "managers credit a new way of assessing patients on arrival and "
            "{staff} extra nurses hired in the spring",
            "short": "cut emergency waiting times by {pct}, to an average of {mins}",
            "facts": ("pct", "mins"),
        },
        {
            "slots": {"n": ("num", 2000, 14000, "people")},
            "event": "vaccinated {n} in a two-week flu campaign",
            "detail": "mobile teams visited care homes, village halls and {k} workplaces",
            "consequence": "officials say the campaign should reduce winter admissions, which "
            "peaked at {peak} a week last year",
            "short": "vaccinated {n} in a two-week flu campaign",
            "facts": ("n",),
        },
        {
            "slots": {"cases": ("count", 6, 40, "cases")},
            "event": "confirmed {cases} of measles linked to two primary schools",
            "detail": "parents of children who have not had both doses are being offered "
            "vaccination at a pop-up clinic",
            "consequence": "anyone with a rash and a fever has been asked to phone before "
            "visiting a doctor",
            "short": "confirmed {cases} of measles linked to two primary schools",
            "facts": ("cases",),
            "quotes": (
                "Vaccination is the best protection, and it is never too late",
                "Measles spreads very easily, so please check your child's records",
            ),
        },
        {
            "slots": {"scans": ("num", 180, 420, "scans")},
            "event": "installed a new scanner costing {amount}",
            "detail": "the machine can carry out {scans} a week, roughly twice as many as the "
            "one it replaces",
            "consequence": "patients who used to travel to {place2} for scans can now be seen "
            "closer to home",
            "short": "installed a new {amount} scanner that can carry out {scans} a week",
            "facts": ("amount", "scans"),
        },
    ),
    "templates": (
        (
            "{hospital} {event} in {month}, health officials said on {weekday}.",
            "{detail}.",
            FILLER,
            '"{quote}," said {person}, the hospital\'s {role}.',
            "{consequence}.",
            FILLER,
        ),
        (
            '"{quote}," said {person}, {role} at {hospital}.',
            "{person_last} was speaking after the hospital {event} in {month}.",
            "{detail}.",
            FILLER,
            "{consequence}.",
            FILLER,
        ),
        (
            FILLER,
            "In {month}, {hospital} {event}.",
            "{detail}.",
            "{consequence}.",
            "The hospital serves about {pop} people across {region}.",
            FILLER,
        ),
    ),
    "references": ("In {month}, {hospital} {short}.",),
    "quotes": (
        "Our staff have worked incredibly hard to make this happen",
        "This will make a real difference to patients and their families",
        "We know there is still more to do, but this is a good start",
    ),
    "fillers": (
        "The hospital first opened in {old_year} as a small cottage hospital with twelve beds.",
        "Car parking at the site remains a common complaint among visitors.",
        "A cafe run by volunteers opened in the main entrance last year.",
        '"The staff could not have been kinder," said {person2}, whose mother was treated '
        "there recently.",
        "The health board will publish a full report on its services in the autumn.",
    ),
}

TECHNOLOGY = {
    "name": "technology",
    "slots": {
        "role": ("pick", ("chief executive", "head of operations", "technical director")),
        "staff": ("num", 40, 600),
        "customers": ("num", 8000, 90000, "customers"),
        "hours": ("num", 6, 30, "hours"),
    },
    "facts": ("org", "place"),
    "scenarios": (
        {
            "slots": {
                "homes": ("num", 3000, 25000, "homes"),
                "km": ("num", 40, 220, "kilometres"),
            },
            "org": "{person3_last} Networks",
            "kind": "broadband provider",
            "event": "announced plans to connect {homes} to full-fibre broadband by {month}",
            "detail": "engineers will lay about {km} of new cable, much of it along existing "
            "telephone poles",
            "consequence": "households will be able to switch without paying a connection fee",
            "short": "plans to connect {homes} to full-fibre broadband by {month}",
            "facts": ("homes", "month"),
            "quotes": ("This is the biggest investment in the town's connections in a generation",),
        },
        {
            "slots": {"downloads": ("num", 1200, 9000)},
            "org": "{person3_last} Digital",
            "kind": "software start-up",
            "event": "launched a free app that lets residents report potholes and broken "
            "street lights",
            "key": "potholes",
            "detail": "the app was downloaded {downloads} times in its first week",
            "consequence": "the council has agreed to publish how quickly each report is fixed",
            "short": "launched a free app for reporting potholes that was downloaded "
            "{downloads} times in its first week",
            "facts": ("key", "downloads"),
            "quotes": ("We wanted something simple that anyone could use",),
        },
        {
            "org": "{region} Building Society",
            "kind": "building society",
            "event": "confirmed that the personal details of {customers} were exposed in a "
            "cyber attack",
            "detail": "names, addresses and phone numbers were taken, but no passwords or "
            "card numbers were accessed",
            "consequence": "affected customers are being contacted by letter and offered free "
            "credit monitoring for a year",
            "short": "said a cyber attack exposed the personal details of {customers}",
            "facts": ("customers",),
            "quotes": (
                "We are deeply sorry, and we are doing everything we can to protect our customers",
            ),
        },
        {
            "slots": {
                "robots": ("count", 6, 40, "delivery robots"),
                "radius": ("pick", ("two kilometres", "three kilometres", "four kilometres")),
            },
            "org": "{person3_last} Robotics",
            "kind": "delivery company",
            "event": "started a trial of {robots} on the town's pavements",
            "detail": "the robots carry groceries from two supermarkets to homes within "
            "{radius} of the town centre",
            "consequence": "the trial will run until {month}, when the council will decide "
            "whether to allow it permanently",
            "short": "started a trial of {robots} on local pavements, running until {month}",
            "facts": ("robots", "month"),
            "quotes": ("People have been surprised by how polite the robots are",),
        },
        {
            "org": "{region} Mobile",
            "kind": "mobile network",
            "event": "restored service to {customers} after a fault that lasted {hours}",
            "detail": "calls, texts and mobile data were all affected, and some card machines "
            "in shops stopped working",
            "consequence": "customers will receive a credit on their next bill",
            "short": "restored service to {customers} after a fault that lasted {hours}",
            "facts": ("customers", "hours"),
            "quotes": ("We apologise to everyone who was affected",),
        },
    ),
    "templates": (
        (
            "{org}, a {kind} based in {place}, has {event}.",
            "{detail}.",
            FILLER,
            '"{quote}," said {person}, the company\'s {role}.',
            "{consequence}.",
            FILLER,
        ),
        (
            '"{quote}," said {person}, {role} at {org}.',
            "On {weekday}, the {kind} from {place} {event}.",
            "{detail}.",
            FILLER,
            "{consequence}.",
            FILLER,
        ),
        (
            FILLER,
            "On {weekday}, {org} {event}.",
            "{detail}.",
            "{consequence}.",
            "{org} was set up in {place} in {recent_year} and employs about {staff} people.",
            FILLER,
        ),
    ),
    "references": ("{org}, a {kind} in {place}, {short}.",),
    "quotes": ("We are pleased with how things are going",),
    "fillers": (
        "The company has grown quickly and moved into larger offices last spring.",
        "Technology firms in {region} have struggled to recruit engineers in recent years.",
        '"I only found out about it from a neighbour," said {person2}, who lives in {place}.',
        "The firm's previous project, a smart parking system, was dropped after a short trial.",
        "Industry experts say similar schemes are being tested in several other towns.",
    ),
}

CULTURE = {
    "name": "culture and arts",
    "slots": {
        "fest": ("pick", ("Lantern", "Harbour Lights", "{river} Folk", "Midsummer Jazz")),
        "theatre": ("pick", ("Corn Exchange Theatre", "Playhouse", "Lyric Theatre")),
        "artist": "{person2}",
        "amount": ("money", 200, 2500),
        "pct": ("pct", 40, 85),
    },
    "facts": ("name", "place", "month"),
    "scenarios": (
        {
            "slots": {
                "visitors": ("num", 4000, 30000, "visitors"),
                "acts": ("num", 40, 160),
                "stages": ("pick", ("three", "four", "five", "six")),
            },
            "name": "{fest} Festival",
            "subject": "the {name}",
            "event": "drew {visitors} over its opening weekend",
            "detail": "more than {acts} acts performed on {stages} stages, from brass bands to "
            "a children's puppet show",
            "consequence": "local traders say the festival brought about {amount} into local "
            "shops, cafes and hotels",
            "role": "the festival's director",
            "short": "drew {visitors} over its opening weekend",
            "facts": ("visitors",),
        },
        {
            "slots": {"paintings": ("count", 30, 90, "paintings")},
            "name": "{person3_last} Museum",
            "subject": "the {name}",
            "event": "opened an exhibition of {paintings} by the local artist {artist}",
            "detail": "many of the works have never been shown in public and were lent by "
            "private collectors",
            "consequence": "the exhibition runs until the end of the year, and entry is free "
            "for under-18s",
            "role": "the museum's curator",
            "short": "opened an exhibition of {paintings} by local artist {artist}",
            "facts": ("paintings", "artist"),
        },
        {
            "slots": {"shows": ("count", 8, 24)},
            "name": "{theatre}",
            "subject": "the {name}",
            "event": "reopened after a restoration costing {amount}",
            "detail": "the work uncovered a painted ceiling from {old_year} that had been "
            "hidden behind plaster for decades",
            "consequence": "the first season includes {shows} productions, and {pct} of the "
            "tickets have already been sold",
            "role": "the theatre's director",
            "short": "reopened after a restoration costing {amount}",
            "facts": ("amount",),
        },
        {
            "slots": {
                "choirs": ("count", 12, 45, "other choirs"),
                "singers": ("count", 30, 90),
                "amount": ("money", 5, 40),
            },
            "name": "{river} Valley Choir",
            "subject": "the {name}",
            "event": "won first prize at a national singing competition, beating {choirs}",
            "detail": "the choir's {singers} singers range in age from sixteen to eighty-one",
            "consequence": "the prize includes {amount} and the chance to record an album",
            "role": "the choir's conductor",
            "short": "won a national singing competition, beating {choirs}",
            "facts": ("choirs",),
        },
        {
            "slots": {"entries": ("num", 600, 3000, "entries"), "amount": ("money", 1, 10)},
            "name": "{river} Short Story Prize",
            "subject": "the {name}",
            "event": "received {entries}, a record for the competition",
            "detail": "the winning story, about a lighthouse keeper's last night at work, was "
            "written by {artist}, a retired nurse",
            "consequence": "the winner receives {amount} and will be published in an anthology "
            "this winter",
            "role": "one of the judges",
            "short": "received a record {entries}, and {artist} won",
            "facts": ("entries", "artist"),
        },
    ),
    "templates": (
        (
            "In {month}, {subject} in {place} {event}.",
            "{detail}.",
            FILLER,
            '"{quote}," said {person}, {role}.',
            "{consequence}.",
            FILLER,
        ),
        (
            "It was a proud {month} for {place} as {subject} {event}.",
            "{detail}.",
            '"{quote}," said {person}, {role}.',
            FILLER,
            "{consequence}.",
        ),
        (
            FILLER,
            "Organisers in {place} said that in {month}, {subject} {event}.",
            "{consequence}.",
            "{detail}.",
            FILLER,
            '"{quote}," said {person}, {role}.',
        ),
    ),
    "references": ("In {month}, {subject} in {place} {short}.",),
    "quotes": (
        "We could not have hoped for a better response",
        "It shows how much people here care about the arts",
        "Years of hard work have gone into this",
    ),
    "fillers": (
        "The town has a long tradition of amateur theatre and music.",
        "Volunteers spent weeks preparing, from painting signs to running the ticket office.",
        '"My grandchildren loved every minute of it," said {person4}, who travelled from '
        "{place2} for the day.",
        "A small grant from the {region} Arts Council helped cover the costs.",
        "Local schools were offered free places for pupils.",
        "Parking was limited, and visitors were encouraged to arrive by bus.",
    ),
}

EDUCATION = {
    "name": "education",
    "slots": {
        "estate": ("pick", ("Hillside", "Oakfield", "Northgate", "Meadowbank", "Riverside")),
        "school": (
            "pick",
            ("{person3_last} Academy", "{river} Valley School", "{estate} High School"),
        ),
        "raised": ("money", 1, 9),
    },
    "facts": ("school", "place", "person"),
    "scenarios": (
        {
            "slots": {"pct": ("pct", 35, 78)},
            "event": "recorded its best exam results, with {pct} of pupils achieving top grades",
            "detail": "the school credits extra after-school classes and a tutoring scheme run "
            "by former pupils",
            "consequence": "several pupils have won places at universities that had never "
            "before taken students from the school",
            "short": "recorded its best exam results, with {pct} of pupils getting top grades",
            "facts": ("pct",),
        },
        {
            "slots": {
                "amount": ("money", 800, 6500),
                "labs": ("pick", ("four", "five", "six", "eight")),
            },
            "event": "opened a new science block costing {amount}",
            "detail": "the building has {labs} laboratories, solar panels and a rooftop "
            "weather station",
            "consequence": "every pupil will now be able to take separate physics, chemistry "
            "and biology classes",
            "short": "opened a new science block costing {amount}",
            "facts": ("amount",),
        },
        {
            "slots": {"roll": ("num", 60, 140, "pupils")},
            "event": "announced that it will close in {month} because pupil numbers have "
            "fallen to {roll}",
            "detail": "pupils will be offered places at two larger schools in {place2}, with "
            "free buses provided",
            "consequence": "parents have started a petition asking the county to reconsider",
            "short": "will close in {month} after pupil numbers fell to {roll}",
            "facts": ("month", "roll"),
            "quotes": (
                "This is a sad day, and we did not take the decision lightly",
                "Our priority now is making sure every child has a good place to go",
            ),
        },
        {
            "slots": {"fed": ("num", 40, 220, "pupils")},
            "event": "started a free breakfast club that now feeds {fed} every morning",
            "detail": "teachers say pupils arrive calmer and are more ready to learn",
            "consequence": "the club is paid for by a local supermarket, which has promised "
            "support for three years",
            "short": "started a free breakfast club that feeds {fed} every morning",
            "facts": ("fed",),
        },
        {
            "slots": {
                "rivals": ("count", 20, 90, "other schools"),
                "team_n": ("pick", ("four", "five", "six", "seven")),
            },
            "event": "won a national robotics competition, beating {rivals}",
            "detail": "the team of {team_n} pupils built a robot that sorts recycling by "
            "colour and weight",
            "consequence": "the team will represent the country at an international final in "
            "{month}",
            "short": "won a national robotics competition, beating {rivals}",
            "facts": ("rivals", "month"),
        },
        {
            "slots": {"posts": ("count", 3, 9, "teaching posts")},
            "event": "warned that it still has {posts} it cannot fill",
            "detail": "maths and physics classes are being covered by supply staff, some of "
            "whom change every few weeks",
            "consequence": "governors have written to the education department asking for "
            "help with housing costs for new teachers",
            "short": "warned that it has {posts} it cannot fill",
            "facts": ("posts",),
            "quotes": (
                "We are doing our best, but pupils deserve a permanent teacher in every class",
                "Young teachers simply cannot afford to live in the town",
            ),
        },
    ),
    "templates": (
        (
            "{school} in {place} {event}, head teacher {person} said on {weekday}.",
            "{detail}.",
            FILLER,
            '"{quote}," said {person_last}.',
            "{consequence}.",
            FILLER,
        ),
        (
            '"{quote}," said {person}, head teacher of {school} in {place}.',
            "{person_last} was speaking after the school {event}.",
            "{detail}.",
            FILLER,
            "{consequence}.",
            FILLER,
        ),
        (
            FILLER,
            "{school}, a secondary school in {place}, {event}.",
            "{detail}.",
            "{consequence}.",
            "Head teacher {person} said families had been told the news by letter.",
            FILLER,
        ),
    ),
    "references": ("{school} in {place} {short}, head teacher {person} said.",),
    "quotes": (
        "The pupils have worked incredibly hard, and they deserve this",
        "This is what happens when a whole community backs its school",
        "I could not be prouder of our staff and pupils",
    ),
    "fillers": (
        "The school was rated good at its last inspection, in {recent_year}.",
        "The school opened in {old_year} in a former army barracks.",
        "Parents were told the news in a letter sent home on {weekday2}.",
        "The school's uniform was redesigned last year after a vote by pupils.",
        "Pupils recently raised {raised} for a local hospice with a sponsored silence.",
        "{place} has three secondary schools, all within a short bus ride of the town centre.",
    ),
}

TRANSPORT = {
    "name": "transport",
    "slots": {
        "role": ("pick", ("managing director", "head of operations", "customer director")),
        "freq": ("pick", ("fifteen minutes", "twenty minutes", "half an hour")),
    },
    "facts": ("operator", "month"),
    "scenarios": (
        {
            "slots": {"riders": ("num", 300, 1800)},
            "operator": "{region} Buses",
            "event": "will launch a new bus route between {place} and {place2} in {month}",
            "detail": "buses will run every {freq} from six in the morning until midnight",
            "consequence": "the company expects about {riders} passengers a day once the route "
            "is established",
            "short": "will launch a new bus route between {place} and {place2} in {month}",
            "facts": ("place", "place2"),
        },
        {
            "slots": {"mins": ("num", 20, 45, "minutes")},
            "operator": "{region} Rail",
            "event": "has delayed the reopening of the railway line between {place} and "
            "{place2} until {month}",
            "detail": "engineers found that a tunnel near {place2} needs more repairs than planned",
            "consequence": "replacement buses will keep running, adding about {mins} to each "
            "journey",
            "short": "has delayed the reopening of the {place} to {place2} railway until {month}",
            "facts": ("place", "place2"),
            "quotes": ("We know how frustrating this is, and we are sorry",),
        },
        {
            "slots": {"fare": ("pick", ("£1", "£1.50", "£2")), "grant": ("money", 300, 2500)},
            "operator": "{region} Buses",
            "event": "will cut bus fares in {place} to a flat {fare} for every journey from "
            "{month}",
            "detail": "the cut is paid for by a {grant} grant from the regional transport fund",
            "consequence": "officials hope the change will win back passengers who stopped "
            "using buses in recent years",
            "short": "will cut bus fares in {place} to a flat {fare} from {month}",
            "facts": ("place", "fare"),
        },
        {
            "slots": {"trains": ("count", 6, 30), "seats": ("num", 200, 900)},
            "operator": "{region} Rail",
            "event": "will run {trains} extra trains a day between {place} and {place2} from "
            "{month}",
            "detail": "the new timetable means a train every {freq} at peak times",
            "consequence": "the company says the trains will be longer too, with room for "
            "{seats} more passengers",
            "short": "will run {trains} extra trains a day between {place} and {place2} from "
            "{month}",
            "facts": ("trains", "place"),
        },
        {
            "slots": {"ebuses": ("count", 10, 45), "amount": ("money", 4000, 22000)},
            "operator": "{region} Buses",
            "event": "will replace its diesel buses in {place} with {ebuses} electric ones by "
            "{month}",
            "detail": "the new vehicles cost {amount} in total, half of it paid by a "
            "government grant",
            "consequence": "charging points are being installed at the depot on {river} Road",
            "short": "will replace its diesel buses in {place} with {ebuses} electric ones by "
            "{month}",
            "facts": ("ebuses", "place"),
        },
    ),
    "templates": (
        (
            "{operator} {event}, the company said on {weekday}.",
            "{detail}.",
            FILLER,
            '"{quote}," said {person}, the company\'s {role}.',
            "{consequence}.",
            FILLER,
        ),
        (
            '"{quote}," said {person}, {role} at {operator}, as the company confirmed that it '
            "{event}.",
            "{detail}.",
            FILLER,
            "{consequence}.",
            FILLER,
        ),
        (
            FILLER,
            "{operator} has run services in the area since {recent_year}.",
            "On {weekday}, it announced that it {event}.",
            "{detail}.",
            "{consequence}.",
            '"{quote}," said {person}, the company\'s {role}.',
        ),
    ),
    "references": ("{operator} {short}.",),
    "quotes": (
        "We have listened to passengers, and this is what they asked for",
        "Good public transport is what keeps a town connected",
    ),
    "fillers": (
        "Passenger numbers in the area fell sharply during the pandemic and have only partly "
        "recovered.",
        "A passenger group has long campaigned for better evening services.",
        '"I would use public transport more if it were reliable," said {person2}, a nurse '
        "who commutes to work every day.",
        "Timetables will be posted at stops and on the company's website.",
        "The company's drivers recently agreed a new pay deal after months of talks.",
    ),
}

AGRICULTURE = {
    "name": "agriculture",
    "slots": {
        "union": (
            "pick",
            (
                "{region} Farmers' Union",
                "{region} Growers' Association",
                "{place3} Agricultural Society",
            ),
        ),
        "role": ("pick", ("chair", "secretary", "president")),
        "pct": ("pct", 12, 35),
        "farms": ("count", 8, 30, "farms"),
    },
    "facts": ("place", "union"),
    "scenarios": (
        {
            "main": "farmers around {place} cut their water use by {pct} during a trial of soil "
            "moisture sensors on {farms}",
            "detail": "the sensors, buried beside the crops, send a message to the farmer's "
            "phone when the soil becomes too dry",
            "consequence": "the union plans to offer the sensors to members at cost next spring",
            "short": "farmers cut their water use by {pct} in a trial of soil sensors on {farms}",
            "facts": ("pct", "farms"),
        },
        {
            "slots": {"tonnes": ("num", 2000, 9000, "tonnes")},
            "main": "apple growers around {place} picked a record {tonnes} this autumn",
            "detail": "a warm spring and the absence of late frosts helped the fruit to set well",
            "consequence": "prices at the farm gate have fallen by {pct}, and some growers are "
            "turning surplus apples into juice",
            "short": "apple growers picked a record {tonnes}, and prices fell by {pct}",
            "facts": ("tonnes", "pct"),
        },
        {
            "slots": {"weeks": ("pick", ("three weeks", "four weeks", "six weeks"))},
            "main": "vets have placed movement restrictions on {farms} near {place} after an "
            "outbreak of a cattle disease",
            "detail": "no animals can be bought or sold from the affected farms until tests "
            "come back clear",
            "consequence": "the restrictions are expected to last at least {weeks}",
            "short": "vets restricted animal movements on {farms} for at least {weeks} after a "
            "cattle disease outbreak",
            "facts": ("farms", "weeks"),
            "quotes": ("We are taking this very seriously, and farmers are being supported",),
        },
        {
            "slots": {
                "shoppers": ("num", 900, 4000, "shoppers"),
                "stalls": ("count", 20, 60),
            },
            "main": "a new farmers' market in {place} attracted {shoppers} on its opening day",
            "detail": "there were {stalls} stalls, selling everything from goat's cheese to "
            "smoked trout",
            "consequence": "the market will now run on the first Saturday of every month",
            "short": "a new farmers' market attracted {shoppers} on its opening day and will "
            "run monthly",
            "facts": ("shoppers",),
        },
        {
            "main": "wheat yields on farms around {place} fell by {pct} after one of the "
            "wettest summers on record",
            "detail": "some fields were too waterlogged for combine harvesters until late "
            "September",
            "consequence": "the union has asked the government for help with the cost of "
            "drying grain",
            "short": "wheat yields fell by {pct} after a very wet summer",
            "facts": ("pct",),
        },
    ),
    "templates": (
        (
            "{main}, the {union} said on {weekday}.",
            "{detail}.",
            FILLER,
            '"{quote}," said {person}, {role} of the union.',
            "{consequence}.",
            FILLER,
        ),
        (
            '"{quote}," said {person}, who farms near {place2} and is {role} of the {union}.',
            "{person_last} was speaking after figures showed that {main}.",
            "{detail}.",
            FILLER,
            "{consequence}.",
        ),
        (
            FILLER,
            "It has been an unusual year for farming around {place}.",
            "According to the {union}, {main}.",
            "{detail}.",
            "{consequence}.",
            FILLER,
        ),
    ),
    "references": ("Around {place}, {short}, according to the {union}.",),
    "quotes": (
        "Farming is always at the mercy of things we cannot control",
        "We are keeping a close eye on what happens next",
        "People want to know where their food comes from, and that matters",
    ),
    "fillers": (
        "Many farms in the area have been run by the same families for generations.",
        "The price of fertiliser has roughly doubled in the past three years.",
        "The {region} county show, the biggest event in the farming calendar, takes place in "
        "{month2}.",
        '"We are a small farm, so every change matters to us," said {person4}, who keeps sheep '
        "near {place3}.",
        "Young people are increasingly reluctant to take up farming, according to the union.",
    ),
}

COMMUNITY = {
    "name": "community and volunteering",
    "slots": {
        "members": ("num", 200, 3000),
    },
    "facts": ("place", "person"),
    "scenarios": (
        {
            "slots": {
                "bags": ("num", 90, 400, "bags"),
                "items": ("pick", ("a shopping trolley", "two car tyres", "an old fridge door")),
            },
            "main": "volunteers collected {bags} of rubbish from the beach at {place} in a "
            "single morning",
            "role": "organised the clean-up",
            "detail": "most of the rubbish was plastic, but the haul also included {items}",
            "consequence": "the group now plans to hold a clean-up on the first Sunday of "
            "every month",
            "short": "volunteers collected {bags} of rubbish from the beach at {place}",
            "facts": ("bags",),
        },
        {
            "slots": {"parcels": ("num", 400, 2200, "food parcels")},
            "main": "the {place} food bank handed out {parcels} in {month}, the busiest month "
            "in its history",
            "role": "manages the food bank",
            "detail": "about a third of the people it helped were in work but struggling with "
            "rent and energy bills",
            "consequence": "the food bank is asking for donations of tinned fish, rice and "
            "nappies, which are running low",
            "short": "the {place} food bank handed out a record {parcels} in {month}",
            "facts": ("parcels", "month"),
            "quotes": ("We should not need to exist, but while people need us we will be here",),
        },
        {
            "slots": {
                "raised": ("money", 8, 80),
                "walkers": ("num", 150, 900),
                "hospital": ("pick", ("{place2} General Hospital", "{region} Royal Infirmary")),
            },
            "main": "a sponsored walk from {place} to {place2} raised {raised} for the "
            "children's ward at {hospital}",
            "role": "came up with the idea",
            "detail": "more than {walkers} people took part, some of them pushing prams or "
            "walking with dogs",
            "consequence": "the money will pay for beds for parents who stay overnight with "
            "their children",
            "short": "a sponsored walk from {place} to {place2} raised {raised} for a "
            "children's ward",
            "facts": ("raised", "place2"),
        },
        {
            "slots": {"guests": ("count", 20, 70, "guests")},
            "main": "a cafe in {place} started serving free lunches to older residents who "
            "live alone",
            "role": "owns the cafe",
            "detail": "about {guests} now come every Thursday, and volunteers collect those "
            "who cannot walk",
            "consequence": "the owner hopes other businesses in the town will offer something "
            "similar",
            "short": "a cafe in {place} now serves free lunches to older residents who live "
            "alone, with about {guests} each week",
            "facts": ("guests",),
        },
        {
            "slots": {
                "repairs": ("num", 300, 1200, "broken items"),
                "weight": ("pick", ("two tonnes", "three tonnes", "five tonnes")),
            },
            "main": "a repair cafe in {place} fixed {repairs} in its first year",
            "role": "started the cafe",
            "detail": "volunteers mended everything from toasters and lamps to bicycles and "
            "torn coats",
            "consequence": "the group estimates it kept about {weight} of waste out of landfill",
            "short": "a repair cafe in {place} fixed {repairs} in its first year, saving about "
            "{weight} of waste",
            "facts": ("repairs", "weight"),
        },
    ),
    "templates": (
        (
            "{main}, organisers said on {weekday}.",
            "{detail}.",
            FILLER,
            '"{quote}," said {person}, who {role}.',
            "{consequence}.",
            FILLER,
        ),
        (
            '"{quote}," said {person}, who {role}.',
            "{person_last} was speaking after {main}.",
            "{detail}.",
            FILLER,
            "{consequence}.",
        ),
        (
            FILLER,
            "{main}, according to {person}, who {role}.",
            "{detail}.",
            FILLER,
            "{consequence}.",
            FILLER,
        ),
    ),
    "references": ("{short}, says {person}, who {role}.",),
    "quotes": (
        "I never expected so many people to turn up",
        "It shows what a community can do when it pulls together",
        "Everyone who helped should be very proud",
    ),
    "fillers": (
        "The group was set up on social media and now has more than {members} members.",
        "Local businesses donated food and drinks for the volunteers.",
        "The town council has offered the group free use of a hall.",
        '"I came along to help for an hour and stayed all day," said {person2}, a student '
        "from {place2}.",
        "{place} has a long history of volunteering, dating back to a flood relief effort in "
        "{old_year2}.",
    ),
}

EMERGENCY = {
    "name": "emergency services",
    "slots": {
        "hours": ("num", 5, 20, "hours"),
        "nth": ("pick", ("third", "fourth", "fifth", "sixth", "seventh")),
    },
    "facts": ("place", "weekday"),
    "scenarios": (
        {
            "slots": {
                "rescued": ("count", 4, 15, "people"),
                "stations": ("pick", ("three", "four", "five")),
                "injured": ("pick", ("two residents", "three residents", "one resident")),
            },
            "main": "firefighters rescued {rescued} from a fire in a block of flats in {place}",
            "role": "the station manager",
            "detail": "crews from {stations} stations were called shortly after midnight, and "
            "the fire was under control within two hours",
            "consequence": "{injured} went to hospital with smoke inhalation, and the cause of "
            "the fire is being investigated",
            "short": "firefighters rescued {rescued} from a burning block of flats in {place}",
            "facts": ("rescued",),
            "quotes": (
                "The residents did exactly the right thing by closing their doors and "
                "waiting for us",
            ),
            "fillers": (
                "Volunteers from the community centre offered tea and blankets to residents "
                "who could not return home.",
                "The block was built in the 1960s and had its fire alarms replaced last year.",
                '"It all happened so fast," said {person2}, who lives in the next street.',
            ),
        },
        {
            "slots": {
                "sailors": ("pick", ("two sailors", "three sailors", "four sailors")),
                "dist": ("num", 8, 30, "kilometres"),
            },
            "main": "the {place} lifeboat crew rescued {sailors} whose yacht had lost its mast "
            "{dist} offshore",
            "role": "the lifeboat's coxswain",
            "detail": "the crew reached the yacht in heavy seas and towed it back to the harbour",
            "consequence": "all of the sailors were checked by paramedics, and none needed "
            "hospital treatment",
            "short": "the {place} lifeboat rescued {sailors} from a damaged yacht {dist} offshore",
            "facts": ("sailors", "dist"),
            "quotes": ("Conditions were difficult, but the crew did a superb job",),
            "fillers": (
                "The lifeboat station has been run by volunteers since {old_year}.",
                "The yacht had set out from {place2} the previous evening.",
            ),
        },
        {
            "main": "mountain rescue volunteers found a missing walker near {place} after a "
            "search lasting {hours}",
            "role": "the team's leader",
            "detail": "the walker, a man in his sixties, had slipped and hurt his ankle in "
            "thick fog",
            "consequence": "he was flown to hospital in {place2} and is expected to make a full "
            "recovery",
            "short": "mountain rescuers found an injured walker near {place} after searching "
            "for {hours}",
            "facts": ("hours",),
            "quotes": (
                "Fog can come down very quickly on these hills, so please carry a map and a torch",
            ),
            "fillers": (
                "A search dog and two drones helped the volunteers.",
                "The walker's family raised the alarm when he did not return for dinner.",
            ),
        },
        {
            "slots": {"bikes": ("num", 30, 140, "stolen bicycles")},
            "main": "police in {place} recovered {bikes} from a storage unit",
            "role": "the local police inspector",
            "detail": "two men have been arrested and released on bail while enquiries continue",
            "consequence": "owners can identify their bicycles at the police station from {date}",
            "short": "police in {place} recovered {bikes}, which owners can claim from {date}",
            "facts": ("bikes", "date"),
            "quotes": ("We would urge everyone to register their bicycle and use a good lock",),
            "fillers": (
                "Bicycle thefts in the town have risen sharply over the past two years.",
                "Some of the bicycles had been reported stolen more than a year ago.",
            ),
        },
        {
            "slots": {"cost": ("money", 20, 300)},
            "main": "the main road through {place} was closed for {hours} after a lorry shed "
            "its load of timber",
            "role": "a highways officer",
            "detail": "nobody was hurt, but traffic was sent along narrow village lanes",
            "consequence": "the road surface will need repairs costing about {cost}",
            "short": "the main road through {place} was closed for {hours} after a lorry shed "
            "its load, leaving {cost} of repairs",
            "facts": ("hours", "cost"),
            "quotes": ("We are grateful to drivers for their patience",),
            "fillers": (
                "Shops along the road said trade was badly hit during the closure.",
                "The lorry's driver was not injured.",
            ),
        },
    ),
    "templates": (
        (
            "{main} on {weekday}.",
            "{detail}.",
            FILLER,
            '"{quote}," said {person}, {role}.',
            "{consequence}.",
            FILLER,
        ),
        (
            "{main}, {person}, {role}, said on {weekday}.",
            "{consequence}.",
            FILLER,
            "{detail}.",
            '"{quote}," {person_last} added.',
            FILLER,
        ),
        (
            FILLER,
            "On {weekday}, {main}.",
            "{detail}.",
            FILLER,
            "{consequence}.",
            "{person}, {role}, thanked members of the public who had helped.",
            FILLER,
        ),
    ),
    "references": ("On {weekday}, {short}.",),
    "quotes": ("Everyone involved did a superb job in difficult conditions",),
    "fillers": (
        "Emergency services in the area have had an unusually busy month.",
        "A neighbour posted a video of the scene on social media.",
        "Officials said it was the {nth} incident of its kind this year.",
    ),
}

HOUSING = {
    "name": "housing",
    "slots": {
        "role": (
            "pick",
            (
                "a local housing campaigner",
                "chair of the {place} Tenants' Association",
                "the council's housing lead",
            ),
        ),
        "pct": ("pct", 4, 14),
        "growth": ("num", 1500, 9000),
    },
    "facts": ("place", "month"),
    "scenarios": (
        {
            "slots": {
                "homes": ("num", 60, 480, "homes"),
                "site": ("pick", ("gasworks", "dairy", "paper mill", "bus depot")),
                "pct": ("pct", 20, 40),
            },
            "main": "planners in {place} approved {homes} on the site of the old {site} in {month}",
            "detail": "the developer has agreed that {pct} of the homes will be affordable",
            "consequence": "building is expected to start next year and take about four years",
            "short": "planners in {place} approved {homes} on the old {site} site in {month}, "
            "{pct} of them affordable",
            "facts": ("homes", "pct"),
        },
        {
            "slots": {"rent": ("cash", 850, 1600, 5)},
            "main": "average rents in {place} rose by {pct} in the year to {month}",
            "detail": "a two-bedroom flat now costs about {rent} a month",
            "consequence": "charities say more families are asking for help with deposits and "
            "moving costs",
            "short": "average rents in {place} rose by {pct} in the year to {month}, to about "
            "{rent} for a two-bedroom flat",
            "facts": ("pct", "rent"),
        },
        {
            "slots": {
                "empty": ("count", 20, 90, "empty homes"),
                "amount": ("money", 500, 4000),
            },
            "main": "the council in {place} will spend {amount} bringing {empty} back into use "
            "from {month}",
            "detail": "many of the properties have stood vacant for more than five years",
            "consequence": "the renovated homes will be let to local families on the council's "
            "waiting list",
            "short": "the council in {place} will spend {amount} bringing {empty} back into use "
            "from {month}",
            "facts": ("amount", "empty"),
        },
        {
            "slots": {
                "trust_homes": ("count", 8, 30, "new homes"),
                "waiting": ("count", 40, 200),
            },
            "main": "a community land trust in {place} handed over the keys to {trust_homes} "
            "in {month}",
            "detail": "the homes were built on land given by a local farmer and will be rented "
            "at about half the usual price",
            "consequence": "the trust already has {waiting} families on its waiting list for a "
            "second phase",
            "short": "a community land trust in {place} completed {trust_homes} in {month}, "
            "rented at about half the usual price",
            "facts": ("trust_homes",),
        },
        {
            "slots": {"price": ("cash", 180000, 420000, 1000)},
            "main": "house prices in {place} fell by {pct} in the year to {month}, according "
            "to the {region} Property Index",
            "detail": "the average home now sells for about {price}",
            "consequence": "estate agents say buyers are being cautious because of higher "
            "mortgage rates",
            "short": "house prices in {place} fell by {pct} in the year to {month}, to an "
            "average of about {price}",
            "facts": ("pct", "price"),
        },
    ),
    "templates": (
        (
            "{main}.",
            "{detail}.",
            FILLER,
            '"{quote}," said {person}, {role}.',
            "{consequence}.",
            FILLER,
        ),
        (
            '"{quote}," said {person}, {role}, responding to news that {main}.',
            "{detail}.",
            FILLER,
            "{consequence}.",
            FILLER,
        ),
        (
            FILLER,
            "Housing has been a hot topic in {place} for years.",
            "{main}.",
            "{detail}.",
            "{consequence}.",
            FILLER,
        ),
    ),
    "references": ("{short}.",),
    "quotes": (
        "Families here have waited far too long for homes they can afford",
        "This is a step in the right direction, but there is much more to do",
        "Young people are being priced out of the town where they grew up",
    ),
    "fillers": (
        "{place} has grown by about {growth} people over the past decade.",
        "Many homes in the town centre were built for mill workers in the nineteenth century.",
        "The town's last large housing estate was completed in {old_year2}.",
        '"We have been looking for somewhere bigger for three years," said {person2}, who '
        "rents a one-bedroom flat.",
        "A public meeting on housing is planned at the town hall next month.",
    ),
}

TOPICS = (
    LOCAL_GOVERNMENT, SCIENCE, BUSINESS, SPORT, WEATHER, HEALTH, TECHNOLOGY, CULTURE,
    EDUCATION, TRANSPORT, AGRICULTURE, COMMUNITY, EMERGENCY, HOUSING,
)  # fmt: skip

# ---------------------------------------------------------------------------------------
# Slot values
# ---------------------------------------------------------------------------------------

ONES = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen",
)  # fmt: skip
TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")


def number_words(n: int) -> str:
    """Spell out 0 <= n < 100 in words, e.g. 42 -> "forty-two"."""
    if n < 20:
        return ONES[n]
    tens, ones = divmod(n, 10)
    return TENS[tens] + (f"-{ONES[ones]}" if ones else "")


def ordinal(n: int) -> str:
    """67 -> "67th", 73 -> "73rd"."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def money(thousands: int) -> str:
    """An amount given in thousands of pounds: 450 -> "£450,000", 2400 -> "£2.4 million"."""
    if thousands >= 1000:
        return f"£{round(thousands / 1000, 1):g} million"
    return f"£{thousands},000"


def with_unit(text: str, spec: tuple) -> str:
    return f"{text} {spec[3]}" if len(spec) > 3 else text


def resolve(spec: str | tuple, rng: random.Random, slots: dict[str, str]) -> str | dict:
    """Turn one slot spec (see the note above the topic tables) into its value."""
    if isinstance(spec, str):
        return spec.format_map(slots)
    kind = spec[0]
    if kind == "pick":
        choice = rng.choice(spec[1])
        if isinstance(choice, dict):
            return {key: text.format_map(slots) for key, text in choice.items()}
        return choice.format_map(slots)
    if kind == "cash":
        step = spec[3] if len(spec) > 3 else 1
        return f"£{rng.randrange(spec[1], spec[2] + 1, step):,}"
    n = rng.randint(spec[1], spec[2])
    if kind == "count":  # words below ten, either form below a hundred, else digits
        spell = n < 10 or (n < 100 and rng.random() < 0.5)
        return with_unit(number_words(n) if spell else f"{n:,}", spec)
    if kind == "num":
        return with_unit(f"{n:,}", spec)
    if kind == "money":
        return money(n if n < 100 else round(n, -1))
    if kind == "pct":
        return f"{n} per cent"
    if kind == "ordinal":
        return ordinal(n)
    raise ValueError(
        f"unknown slot kind {kind!r}; choose from pick, count, num, money, cash, pct, ordinal"
    )


def base_slots(rng: random.Random) -> dict[str, str]:
    """Slots every topic may use: places, people, dates, years."""
    places: list[str] = []
    while len(places) < 3:
        name = rng.choice(PLACE_STARTS) + rng.choice(PLACE_ENDS)
        if name not in places:
            places.append(name)
    slots = {"place": places[0], "place2": places[1], "place3": places[2]}
    people = zip(rng.sample(FIRST_NAMES, 4), rng.sample(LAST_NAMES, 4), strict=True)
    for i, (first, last) in enumerate(people, start=1):
        key = "person" if i == 1 else f"person{i}"
        slots[key] = f"{first} {last}"
        slots[f"{key}_last"] = last
    years = sorted(rng.sample(range(1850, 1991), 3))
    month, month2 = rng.sample(MONTHS, 2)
    weekday, weekday2 = rng.sample(WEEKDAYS, 2)
    slots.update(
        region=rng.choice(REGIONS),
        river=rng.choice(RIVERS),
        month=month,
        month2=month2,
        weekday=weekday,
        weekday2=weekday2,
        date=f"{rng.randint(1, 28)} {month}",
        old_year=str(years[0]),  # foundings and openings
        old_year2=str(years[1]),  # later events
        old_year3=str(years[2]),
        recent_year=str(rng.randint(2005, 2022)),
        pop=f"{rng.randrange(8000, 60000, 100):,}",
    )
    return slots


def scenario_slots(topic: dict, scenario: dict, rng: random.Random) -> dict[str, str]:
    """All slots of one document: base, topic and scenario slots, then scenario strings."""
    slots = base_slots(rng)
    for name, spec in {**topic["slots"], **scenario.get("slots", {})}.items():
        value = resolve(spec, rng, slots)
        if isinstance(value, dict):
            slots.update(value)
        else:
            slots[name] = value
    for name, text in scenario.items():
        if isinstance(text, str):
            slots[name] = text.format_map(slots)
    slots["quote"] = rng.choice(scenario.get("quotes", topic["quotes"]))
    return slots


# ---------------------------------------------------------------------------------------
# Documents
# ---------------------------------------------------------------------------------------


def sentence_case(text: str) -> str:
    """Capitalise the first letter, skipping an opening quotation mark."""
    i = 1 if text.startswith('"') else 0
    return text[:i] + text[i].upper() + text[i + 1 :]


def split_sentences(text: str) -> list[str]:
    """Split a document at sentence ends (a full stop, optionally closing a quote)."""
    return re.split(r'(?<=[.!?])\s+|(?<=[.!?]")\s+', text.strip())


def word_count(text: str) -> int:
    return len(text.split())


def fill_template(template: list[str], fillers: list[str], rng: random.Random) -> list[str]:
    """Sentences of one document: the template's key sentences plus fillers to a target length.

    `fillers` is a shuffled pool of formatted filler sentences, used without repeats.
    """
    sentences = []
    for line in template:
        if line != FILLER:
            sentences.append(line)
        elif fillers and rng.random() < KEEP_FILLER:
            sentences.append(fillers.pop())
    target = rng.randint(MIN_WORDS + 5, 170)
    while fillers and len(sentences) < MAX_SENTENCES and word_count(" ".join(sentences)) < target:
        sentences.insert(rng.randint(2, len(sentences)), fillers.pop())
    return [sentence_case(sentence) for sentence in sentences]


def make_document(topic: dict, rng: random.Random) -> dict:
    """One row (without its id) for `topic`: text, reference summary and key facts."""
    scenario = rng.choice(topic["scenarios"])
    slots = scenario_slots(topic, scenario, rng)
    template = [line.format_map(slots) for line in rng.choice(topic["templates"])]
    pool = topic["fillers"] + scenario.get("fillers", ()) + (rng.choice(GENERIC_FILLERS),)
    fillers = [line.format_map(slots) for line in pool]
    rng.shuffle(fillers)
    text = " ".join(fill_template(template, fillers, rng))
    facts = [slots[name] for name in topic["facts"] + scenario.get("facts", ())]
    return {
        "topic": topic["name"],
        "input_text": text,
        "reference": sentence_case(rng.choice(topic["references"]).format_map(slots)),
        "facts": list(dict.fromkeys(facts)),
    }


def problems(row: dict) -> list[str]:
    """What is wrong with a row, as readable messages; empty when it follows the rules."""
    text, found = row["input_text"], []
    words, sentences = word_count(text), len(split_sentences(text))
    if not MIN_WORDS <= words <= MAX_WORDS:
        found.append(f"{words} words, expected {MIN_WORDS} to {MAX_WORDS}")
    if not MIN_SENTENCES <= sentences <= MAX_SENTENCES:
        found.append(f"{sentences} sentences, expected {MIN_SENTENCES} to {MAX_SENTENCES}")
    if word_count(row["reference"]) > MAX_REFERENCE_WORDS:
        found.append(
            f"reference has {word_count(row['reference'])} words, at most {MAX_REFERENCE_WORDS}"
        )
    if not MIN_FACTS <= len(row["facts"]) <= MAX_FACTS:
        found.append(f"{len(row['facts'])} facts, expected {MIN_FACTS} to {MAX_FACTS}")
    found += [f"fact {fact!r} is not in the text" for fact in row["facts"] if fact not in text]
    return found


def generate(n: int, seed: int) -> list[dict]:
    """`n` distinct rows, the same for the same seed; topics take turns in shuffled rounds."""
    rng = random.Random(seed)
    rows: list[dict] = []
    seen: set[str] = set()
    order: list[dict] = []
    while len(rows) < n:
        if not order:
            order = list(TOPICS)
            rng.shuffle(order)
        topic = order.pop()
        for _ in range(MAX_TRIES):
            row = make_document(topic, rng)
            if row["input_text"] not in seen and not problems(row):
                break
        else:
            raise RuntimeError(f"no valid document for topic {topic['name']!r}: {problems(row)}")
        seen.add(row["input_text"])
        rows.append({"id": f"doc-{len(rows) + 1:04d}", **row})
    return rows


# ---------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------


def write_jsonl(rows: list[dict], path: Path) -> None:
    """Write rows to `path` through a temporary file, so a kill leaves the old file intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def report(rows: list[dict]) -> None:
    """Print topic counts and length statistics; exit with a message if a row breaks a rule."""
    words = [word_count(row["input_text"]) for row in rows]
    sentences = [len(split_sentences(row["input_text"])) for row in rows]
    topics = Counter(row["topic"] for row in rows)
    print(f"{len(rows)} documents, {len(topics)} topics")
    for name, count in sorted(topics.items()):
        print(f"  {name:28s} {count}")
    print(f"words: min {min(words)}, median {statistics.median(words)}, max {max(words)}")
    print(f"sentences: min {min(sentences)}, max {max(sentences)}")
    bad = [f"{row['id']}: {'; '.join(problems(row))}" for row in rows if problems(row)]
    if bad:
        raise SystemExit("rows break the length or fact rules:\n" + "\n".join(bad))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="JSONL file to write")
    parser.add_argument("--n", type=int, default=480, help="number of documents")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same file")
    args = parser.parse_args(argv)
    if args.n < 1:
        raise SystemExit(f"--n must be at least 1, got {args.n}")
    rows = generate(args.n, args.seed)
    report(rows)  # before writing, so a bad run leaves the previous file in place
    write_jsonl(rows, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main(sys.argv[1:])
