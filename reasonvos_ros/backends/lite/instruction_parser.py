"""Rule-based reading of an instruction: which words name the target, which are only context (ROS-free, no model).

An instruction names its target in its first noun phrase ("the *cup* next to the laptop", "the *person* holding
the umbrella"); everything after the first relation or clause word is context: where the target is ("on the
table"), what it is near, what it is used for ("to open this bottle"), who does what with it. The head of the
target phrase is its last noun (English compounds end with their head: a "bottle opener" is an opener, a "tv
remote" a remote). When that head is a placeholder ("the thing", "something", "somewhere", "what") the target is
defined by its use, read from the purpose clause with ``AFFORDANCES`` ("something to cut the bread with" is a
knife; "the thing I'd use to open this bottle" is a bottle opener, not the bottle); when it is a class word
("the animal", "the fruit") the target is one of that class's COCO categories (``CLASS_WORDS``).

Everything here is lexical and deterministic; ``text_to_category`` adds the sentence embedder where a rule
cannot decide (class members by trait, unlisted synonyms).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .coco import CATEGORY_TERMS, COCO_NAME_TO_ID

# --- vocabulary -------------------------------------------------------------------------------------------------

# Request phrasing before the target ("please track the dog", "can you find my phone", "where is the cup").
_REQUEST = re.compile(
    r"^(?:(?:please|ok|okay|hey|robot|now|then|so|and)\b[ ,]*"
    r"|(?:can|could|would|will) you\b(?: please)?[ ,]*"
    r"|(?:i (?:want|need)|i'd like|i would like|let's|lets)(?: you)?(?: to)?\b[ ,]*"
    r"|(?:track|segment|find|follow|locate|detect|highlight|mask|spot|show(?: me)?|point (?:to|at)|look (?:at|for)"
    r"|keep (?:an eye on|track of)|watch|get|grab|pick up|pick|bring|give|hand|pass"
    r"|fetch|take|search for|segment out|outline|where(?: is|'s| are)|which (?:one )?is|what is|tell me)"
    r"(?: me| us)?\b[ ,]*)"
)
DETERMINERS = {
    "the", "a", "an", "this", "that", "these", "those", "my", "your", "his", "her", "our", "their", "its",
    "some", "any", "every", "each", "all", "both", "another", "other", "same",
}  # fmt: skip
# Words that start the context: prepositions, relative and personal pronouns, auxiliaries.
CONTEXT_WORDS = {
    "on", "in", "at", "near", "next", "beside", "besides", "behind", "under", "underneath", "over", "above", "below",
    "between", "by", "from", "of", "with", "without", "to", "for", "into", "onto", "inside", "outside", "across",
    "along", "around", "against", "among", "beneath", "atop", "toward", "towards", "through", "past", "like",
    "that", "which", "who", "whom", "whose", "where", "when", "while", "so", "because", "if",
    "i", "i'd", "i'm", "i'll", "i've", "you", "you'd", "you'll", "you're", "we", "we'd", "he", "she", "they", "it",
    "is", "are", "was", "were", "be", "been", "has", "have", "had", "can", "could", "would", "will", "should",
    "might", "may", "must", "do", "does", "did", "and", "or", "but", "than", "closest", "nearest", "furthest",
    "farthest", "holding", "carrying", "wearing", "riding", "using", "sitting", "standing", "lying",
}  # fmt: skip
# Nouns that stand for "the object" without naming it: the target comes from the context.
PLACEHOLDERS = {
    "thing", "something", "anything", "object", "item", "one", "stuff", "what", "whatever", "somewhere",
    "place", "spot", "tool", "it",
}  # fmt: skip
# "a piece of cake", "a pair of scissors": the noun after "of" is the target.
QUANTITY_WORDS = {"piece", "slice", "pair", "bunch", "couple", "kind", "type", "sort", "bit", "part", "group", "set"}
# Nouns ending in -ing / -ed that are not verb forms (an -ing word after a noun starts a participle clause).
_ING_NOUNS = {"thing", "something", "anything", "nothing", "everything", "ceiling", "ring", "king", "building",
              "painting", "string", "clothing", "wing", "swing", "sibling", "earring", "railing", "pudding", "icing",
              "bed", "sled", "shed", "seed", "red", "speed", "weed", "need"}  # fmt: skip
ATTRIBUTE_WORDS = {
    "red", "green", "blue", "yellow", "orange", "purple", "pink", "brown", "black", "white", "grey", "gray",
    "silver", "golden", "big", "small", "large", "little", "tiny", "huge", "tall", "short", "long", "old", "new",
    "young", "left", "right", "middle", "first", "second", "third", "last", "front", "back", "top", "bottom",
    "empty", "full", "open", "closed", "dark", "light", "striped", "spotted", "wooden", "plastic", "metal", "glass",
    "biggest", "smallest", "largest", "tallest", "leftmost", "rightmost", "other", "nearby", "moving", "running",
    "walking", "sleeping", "parked", "dirty", "clean", "broken", "half", "whole", "cute", "fluffy",
}  # fmt: skip

CLASS_FOOD = ("pizza", "sandwich", "hot dog", "cake", "donut", "banana", "apple", "orange", "broccoli", "carrot")
# Class words -> the COCO categories they cover (the target is one of them).
CLASS_WORDS: dict[str, tuple[str, ...]] = {
    "animal": ("dog", "cat", "horse", "bird", "sheep", "cow", "elephant", "bear", "zebra", "giraffe"),
    "creature": ("dog", "cat", "horse", "bird", "sheep", "cow", "elephant", "bear", "zebra", "giraffe"),
    "pet": ("dog", "cat", "bird"),
    "vehicle": ("car", "truck", "bus", "motorcycle", "bicycle", "train", "airplane", "boat"),
    "fruit": ("banana", "apple", "orange"),
    "vegetable": ("broccoli", "carrot"),
    "veggie": ("broccoli", "carrot"),
    "food": CLASS_FOOD,
    "snack": ("donut", "banana", "apple", "orange", "sandwich", "hot dog", "cake", "pizza"),
    "dessert": ("cake", "donut"),
    "furniture": ("chair", "couch", "bed", "dining table", "bench"),
    "seat": ("chair", "couch", "bench"),
    "cutlery": ("fork", "knife", "spoon"),
    "silverware": ("fork", "knife", "spoon"),
    "utensil": ("fork", "knife", "spoon"),
    "appliance": ("microwave", "oven", "toaster", "refrigerator"),
    "device": ("cell phone", "laptop", "tv", "remote", "keyboard", "mouse"),
    "gadget": ("cell phone", "laptop", "remote"),
    "electronics": ("cell phone", "laptop", "tv", "remote", "keyboard", "mouse"),
    "screen": ("tv", "laptop"),
    "computer": ("laptop",),
    "bag": ("backpack", "handbag", "suitcase"),
    "glass": ("cup", "wine glass"),
    "dish": ("bowl", "cup"),
    "container": ("bottle", "cup", "bowl", "vase"),
    "toy": ("teddy bear", "kite", "frisbee", "sports ball"),
    "drink": ("bottle", "cup", "wine glass"),
    "beverage": ("bottle", "cup", "wine glass"),
}

# Objects people name that the COCO detector cannot find (a head noun in this set is refused outright; any other
# unlisted noun is refused too unless the embedder finds it a near-synonym of a category).
KNOWN_OUT_OF_VOCABULARY = {
    "screwdriver", "hammer", "wrench", "spanner", "pliers", "drill", "saw", "nail", "screw", "bolt", "opener",
    "corkscrew", "key", "keys", "pen", "pencil", "marker", "eraser", "ruler", "stapler", "tape", "glue", "lamp",
    "light", "door", "window", "wall", "floor", "ceiling", "stair", "stairs", "tree", "bush", "flower", "grass",
    "sky", "cloud", "sun", "road", "street", "sidewalk", "building", "house", "towel", "napkin", "plate", "pan",
    "pot", "kettle", "jar", "lid", "cap", "box", "can", "tin", "basket", "bucket", "broom", "mop", "sponge",
    "soap", "shampoo", "brush", "comb", "mirror", "pillow", "blanket", "curtain", "rug", "carpet", "shoe", "shoes",
    "sock", "hat", "shirt", "jacket", "coat", "glove", "gloves", "glasses", "sunglasses", "watch", "wallet", "coin",
    "money", "ticket", "card", "paper", "envelope", "letter", "camera", "headphone", "headphones", "speaker",
    "charger", "cable", "battery", "lighter", "candle", "match", "toy car", "ladder", "rope", "chain", "hose",
    "helmet", "fan", "heater", "shelf", "cabinet", "drawer", "closet", "wardrobe", "dishwasher", "washing machine",
    "blender", "printer", "tablet", "ipad", "whiteboard", "doorknob", "handle", "switch", "button",
    "plug", "socket", "faucet", "tap", "bathtub", "shower", "fence", "gate", "wheel", "tire", "engine", "rock",
    "stone", "stick", "leaf", "banana peel", "egg", "bread", "cheese", "meat", "steak", "rice", "pasta", "soup",
    "coffee", "tea", "water", "milk", "juice", "beer", "wine", "tomato", "potato", "onion", "lemon", "grape",
    "strawberry", "cookie", "chocolate", "candy", "fish", "mouse trap", "spatula", "ladle", "whisk", "grater",
    "tongs", "chopsticks", "straw", "thermos", "flashlight", "tape measure", "needle", "thread", "scarf", "belt",
    "ring", "necklace", "bracelet", "earring", "remote car", "drone", "robot", "trash", "bin", "trash can",
}  # fmt: skip


@dataclass(frozen=True)
class Affordance:
    """A use that defines an object: ``verbs`` (lemmas) with, optionally, one of ``objects`` in the clause.

    ``phrase`` names the object; ``categories`` are the COCO categories that are it (empty: the detector cannot
    find such a thing); ``confidence`` says how clearly the use points to them."""

    verbs: frozenset[str]
    objects: frozenset[str] | None
    phrase: str
    categories: tuple[str, ...]
    confidence: float


def _aff(verbs: str, objects: str | None, phrase: str, categories: tuple[str, ...], confidence: float = 0.85):
    return Affordance(
        frozenset(verbs.split()), frozenset(objects.split()) if objects else None, phrase, categories, confidence
    )


# Checked in order: the first rule whose verb and (if any) object occur in the purpose clause wins, so specific
# rules come before a verb's default.
AFFORDANCES: tuple[Affordance, ...] = (
    _aff("open uncork", "wine cork", "corkscrew", ()),
    _aff("open", "bottle beer soda", "bottle opener", ()),
    _aff("open", "can tin", "can opener", ()),
    _aff("open unlock", "door lock car house", "key", ()),
    _aff("open", "box package parcel envelope letter", "something sharp to open it with", ("scissors", "knife"), 0.6),
    _aff("open", None, "opener", ()),
    _aff("unlock", None, "key", ()),
    _aff("cut trim", "paper hair string ribbon fabric cloth tape coupon nail nails thread", "scissors", ("scissors",)),
    _aff(
        "cut slice chop carve",
        "bread cake meat steak food vegetable vegetables cheese pizza apple fruit tomato onion sandwich",
        "knife",
        ("knife",),
    ),
    _aff("slice chop carve dice spread butter", None, "knife", ("knife",), 0.75),
    _aff("cut", None, "knife or scissors", ("knife", "scissors"), 0.6),
    _aff("sit", "at", "table", ("dining table",), 0.75),
    _aff("sit seat", None, "seat", ("chair", "couch", "bench")),
    _aff("sleep", None, "bed", ("bed",)),
    _aff("lie nap rest relax", None, "bed or couch", ("bed", "couch"), 0.75),
    _aff("drink sip", "wine champagne", "wine glass", ("wine glass",)),
    _aff("drink sip", "coffee tea cocoa espresso latte", "cup", ("cup",)),
    _aff("drink sip", None, "something to drink from", ("cup", "wine glass", "bottle"), 0.75),
    _aff("eat", "soup cereal yogurt yoghurt porridge", "spoon", ("spoon",)),
    _aff("eat", "spaghetti pasta salad noodles steak", "fork", ("fork",)),
    _aff("eat", "with", "cutlery", ("fork", "spoon", "knife"), 0.75),
    _aff("eat", None, "food", CLASS_FOOD, 0.75),
    _aff("stir scoop", None, "spoon", ("spoon",)),
    _aff("serve put pour hold", "soup cereal salad", "bowl", ("bowl",)),
    _aff("put arrange hold", "flower flowers roses tulips", "vase", ("vase",)),
    _aff("read", None, "book", ("book",)),
    _aff("write type", "email code essay document program message", "laptop", ("laptop", "keyboard")),
    _aff("write draw sign scribble", None, "pen or pencil", ()),
    _aff("type", None, "keyboard", ("keyboard", "laptop")),
    _aff("call phone text dial", None, "cell phone", ("cell phone",)),
    _aff("watch", "tv show shows movie movies film films news television series", "tv", ("tv",)),
    _aff("change switch zap", "channel channels", "remote", ("remote",)),
    _aff("tell check know see", "time", "clock", ("clock",)),
    _aff("brush clean", "teeth tooth", "toothbrush", ("toothbrush",)),
    _aff("brush comb", "hair", "hairbrush", ()),
    _aff("dry blow", "hair", "hair drier", ("hair drier",)),
    _aff("dry wipe", None, "towel", ()),
    _aff("heat warm reheat defrost microwave", None, "microwave", ("microwave", "oven"), 0.75),
    _aff("bake roast cook", None, "oven", ("oven",), 0.75),
    _aff("toast", None, "toaster", ("toaster",)),
    _aff(
        "keep store chill cool", "cold fresh food milk drinks drink beer leftovers", "refrigerator", ("refrigerator",)
    ),
    _aff("wash rinse", "hand hands dish dishes face cup cups", "sink", ("sink",)),
    _aff("hit swing", "baseball", "baseball bat", ("baseball bat",)),
    _aff("hit swing serve", "tennis", "tennis racket", ("tennis racket",)),
    _aff("hit", "ball", "bat or racket", ("baseball bat", "tennis racket"), 0.7),
    _aff("kick dribble", None, "ball", ("sports ball",)),
    _aff("throw toss fetch catch", None, "ball or frisbee", ("sports ball", "frisbee"), 0.7),
    _aff("surf", None, "surfboard", ("surfboard",)),
    _aff("ride", "wave waves", "surfboard", ("surfboard",)),
    _aff("ride pedal cycle", None, "bicycle", ("bicycle", "motorcycle", "horse"), 0.6),
    _aff("click scroll", None, "computer mouse", ("mouse",)),
    _aff("pack travel", None, "suitcase", ("suitcase",)),
    _aff("carry", "book books laptop belongings stuff things clothes", "bag", ("backpack", "handbag", "suitcase"), 0.7),
    _aff("stay keep shield", "dry rain sun", "umbrella", ("umbrella",)),
    _aff("flush pee poop", None, "toilet", ("toilet",)),
    _aff("hammer pound", None, "hammer", ()),
    _aff("screw unscrew tighten loosen", None, "screwdriver", ()),
    _aff("sweep", None, "broom", ()),
    _aff("mop", None, "mop", ()),
    _aff("light ignite", None, "lighter", ()),
    _aff("measure", None, "tape measure", ()),
    _aff("listen", None, "headphones", ()),
    _aff("photograph film", None, "camera", ()),
    _aff("climb reach", None, "ladder", ()),
    _aff("fly", "kite", "kite", ("kite",)),
    _aff("browse work code", None, "laptop", ("laptop",), 0.7),
)
# Inflections of the verbs above ("opens", "cutting", "drank").
_IRREGULAR = {"drank": "drink", "drunk": "drink", "ate": "eat", "eaten": "eat", "sat": "sit", "slept": "sleep",
              "cut": "cut", "wrote": "write", "written": "write", "read": "read", "hit": "hit", "threw": "throw",
              "thrown": "throw", "rode": "ride", "ridden": "ride", "lay": "lie", "lying": "lie", "kept": "keep",
              "brought": "bring", "caught": "catch", "swung": "swing", "drew": "draw", "drawn": "draw",
              "dried": "dry", "dries": "dry", "flew": "fly", "flies": "fly", "told": "tell", "sitting": "sit",
              "putting": "put", "cutting": "cut", "hitting": "hit", "shopping": "shop"}  # fmt: skip
_AFFORDANCE_VERBS = frozenset(verb for rule in AFFORDANCES for verb in rule.verbs)

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")


def singular(word: str) -> str:
    """A crude English singular ("dogs" -> "dog", "knives" -> "knife", "glasses" -> "glass")."""
    if word.endswith("'s"):
        word = word[:-2]
    irregular = {"men": "man", "women": "woman", "children": "child", "people": "person", "knives": "knife",
                 "mice": "mouse", "geese": "goose", "teeth": "tooth", "feet": "foot", "skis": "ski",
                 "scissors": "scissors", "glasses": "glasses", "sheep": "sheep", "bus": "bus", "couches": "couch",
                 "benches": "bench", "dishes": "dish", "boxes": "box", "buses": "bus"}  # fmt: skip
    if word in irregular:
        return irregular[word]
    for plural, single in (("ies", "y"), ("ches", "ch"), ("shes", "sh"), ("sses", "ss"), ("xes", "x"), ("s", "")):
        if word.endswith(plural) and len(word) > len(plural) + 2 and not word.endswith(("ss", "us", "is")):
            return word[: -len(plural)] + single
    return word


def verb_lemma(word: str) -> str:
    """The affordance verb a word is an inflection of ("opening" -> "open"), or the word itself."""
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if word in _AFFORDANCE_VERBS:
        return word
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix):
            stem = word[: -len(suffix)]
            for candidate in (stem, stem + "e", stem[:-1] if len(stem) > 2 and stem[-1] == stem[-2] else stem):
                if candidate in _AFFORDANCE_VERBS:
                    return candidate
    return word


def _term_index() -> dict[tuple[str, ...], str]:
    index: dict[tuple[str, ...], str] = {}
    for category, terms in CATEGORY_TERMS.items():
        for term in terms:
            index[tuple(singular(word) for word in term.split())] = category
    return index


TERM_INDEX = _term_index()
_MAX_TERM = max(len(term) for term in TERM_INDEX)
_KNOWN_NOUNS = (
    {word for term in TERM_INDEX for word in term}
    | set(CLASS_WORDS)
    | PLACEHOLDERS
    | {singular(w) for w in KNOWN_OUT_OF_VOCABULARY}
)


@dataclass(frozen=True)
class ParsedInstruction:
    """The parts of an instruction. ``target_words``: the target's noun phrase without determiners (attributes
    and head); ``head``: its head noun (possibly several words, e.g. "hot dog"); ``context``: the words after the
    target phrase (where it is, what it is for); ``attributes``: words of the target phrase before the head."""

    text: str
    target_words: tuple[str, ...]
    head: str
    attributes: tuple[str, ...]
    context: tuple[str, ...]
    category: str | None = None  # the COCO category the head names, if any
    classes: tuple[str, ...] = field(default_factory=tuple)  # categories of a class word head ("animal")

    @property
    def is_placeholder(self) -> bool:
        return self.head in PLACEHOLDERS or not self.head

    @property
    def context_text(self) -> str:
        return " ".join(self.context)


def tokens(text: str) -> list[str]:
    """Lower-case words (apostrophes kept inside words; curly quotes normalised)."""
    text = text.lower().replace("\u2019", "'").replace("\u2018", "'")
    return _WORD.findall(text)


def _strip_request(text: str) -> str:
    text = " ".join(tokens(text))
    while True:
        stripped = _REQUEST.sub("", text, count=1).strip()
        if stripped == text:
            return text
        text = stripped


def _head_at_end(words: list[str]) -> tuple[str, str | None, int]:
    """(head text, COCO category or None, number of words) of the noun at the end of ``words``: the longest
    category term ending there, else the last word."""
    singulars = [singular(word) for word in words]
    for length in range(min(_MAX_TERM, len(words)), 0, -1):
        category = TERM_INDEX.get(tuple(singulars[-length:]))
        if category is not None:
            return " ".join(words[-length:]), category, length
    return (singulars[-1], None, 1) if words else ("", None, 0)


def parse(instruction: str) -> ParsedInstruction:
    """Split ``instruction`` into target phrase and context (see the module docstring)."""
    text = instruction.strip()
    words = tokens(_strip_request(text))
    # The request words may hide the whole target ("where is it"): keep the raw words then.
    if not words:
        words = tokens(text)
    position = 0
    while position < len(words) and words[position] in DETERMINERS:
        position += 1
    start = position
    end = len(words)
    index = position
    while index < len(words):
        word = words[index]
        previous = singular(words[index - 1]) if index > start else None
        noun_before = previous is not None and (previous in _KNOWN_NOUNS or previous not in ATTRIBUTE_WORDS)
        if index > start:
            if word == "of" and previous in QUANTITY_WORDS:
                index += 1
                while index < len(words) and words[index] in DETERMINERS:
                    index += 1
                start = index  # "a pair of scissors": the phrase restarts after "of"
                continue
            if word in ("left", "right") and index + 1 < len(words) and words[index + 1] == "of":
                end = index
                break
            if word in CONTEXT_WORDS or word in DETERMINERS:
                end = index
                break
            if noun_before and word not in _KNOWN_NOUNS and word.endswith(("ing", "ed")) and word not in _ING_NOUNS:
                end = index  # a participle after a noun: "the man walking", "the cup used for coffee"
                break
        elif word in CONTEXT_WORDS - {"one", "it", "what", "that"} and word not in PLACEHOLDERS:
            # The phrase starts with a relation ("on the table"): no target phrase; everything is context.
            end = index
            break
        index += 1
    phrase = words[start:end]
    head, category, length = _head_at_end(phrase)
    attributes = tuple(phrase[: len(phrase) - length])
    classes: tuple[str, ...] = ()
    if category is None and head in CLASS_WORDS:
        classes = CLASS_WORDS[head]
    return ParsedInstruction(text, tuple(phrase), head, attributes, tuple(words[end:]), category, classes)


def find_affordance(context: tuple[str, ...]) -> tuple[Affordance, str, str] | None:
    """The first ``AFFORDANCES`` rule matched by a verb of ``context`` (and an object word after it), with the
    verb and the object word it matched ("" when the rule has no object)."""
    lemmas = [verb_lemma(word) for word in context]
    nouns = [singular(word) for word in context]
    for rule in AFFORDANCES:
        for position, lemma in enumerate(lemmas):
            if lemma not in rule.verbs:
                continue
            if rule.objects is None:
                return rule, context[position], ""
            for word, noun in zip(context[position + 1 :], nouns[position + 1 :]):
                if word in rule.objects or noun in rule.objects:
                    return rule, context[position], word
    return None


def is_coco_category(name: str) -> bool:
    return name in COCO_NAME_TO_ID


def categories_named(words: tuple[str, ...] | list[str]) -> set[str]:
    """The COCO categories that ``words`` name anywhere (by a category term)."""
    singulars = [singular(word) for word in words]
    named = set()
    for start in range(len(singulars)):
        for length in range(1, _MAX_TERM + 1):
            category = TERM_INDEX.get(tuple(singulars[start : start + length]))
            if category is not None:
                named.add(category)
    return named
