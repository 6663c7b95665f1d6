"""Synthetic person records with FEBRL-like corruption, for linkage at scale (vectorised: numpy codes, polars strings).

:func:`generate_people` makes ``num_records`` records with FEBRL's columns (``rec_id, given_name, surname,
street_number, address_1, address_2, suburb, postcode, state, date_of_birth, soc_sec_id``) and the true entity of
each (``entity``). Originals draw names, streets and suburbs from Zipf-weighted vocabularies (a fixed list plus a
long tail of syllable-built names), a postcode and state tied to the suburb, a date of birth between 1920 and 2009,
a 7-digit soc-sec id. A share of the records (``duplicate_share``) are duplicates of an original: between 1 and
``max_duplicates`` per duplicated entity (probability proportional to 1/k), each a copy corrupted as in FEBRL's
generator:

* per field of a duplicate, exclusively (one uniform draw): **missing** with probability ``missing`` (the value
  removed), a **typo** with probability ``typo`` (one edit at a random position: a keyboard-neighbour substitution,
  a deletion, an insertion or a transposition, each 1/4; digits in digit fields), a **variant** with probability
  ``variant`` where the field has one (given name -> a nickname, ``street`` -> ``st`` and other street types,
  ``mount`` -> ``mt`` and other suburb prefixes, a date of birth with day and month swapped);
* per duplicate: given name and surname **swapped** (``swap_names``), the two words of ``address_1`` **swapped**
  (``swap_words``).

A typo or variant always changes the value (a transposition of equal letters falls back to a substitution); one on
a missing value does nothing and is not logged. Originals miss each field with probability ``original_missing``
(``address_2`` is present in ``address_2_share`` of them). Rows are shuffled; ids are FEBRL's ``rec-<entity>-org`` /
``rec-<entity>-dup-<k>``. Same arguments, same seed: the same frame.

:func:`true_pairs` lists every pair of records of the same entity (the dedup truth).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import polars as pl

__all__ = ["Corruption", "FIELDS", "ACTIONS", "generate_people", "true_pairs"]

FIELDS = ("given_name", "surname", "street_number", "address_1", "address_2", "suburb", "postcode", "state",
          "date_of_birth", "soc_sec_id")
#: action codes of the log: what happened to a field of a record
ACTIONS = {"none": 0, "missing": 1, "typo": 2, "variant": 3}
DIGIT_FIELDS = ("street_number", "postcode", "date_of_birth", "soc_sec_id")

_GIVEN = ("jack joshua thomas william james lachlan daniel benjamin samuel matthew ethan ryan liam nicholas alexander "
          "michael jacob luke dylan riley harrison joel christopher jordan cooper noah max patrick zachary connor "
          "robert edward charles richard anthony jessica emily chloe sarah olivia isabella emma hannah sophie grace "
          "ella georgia mia charlotte lauren amelia caitlin madison elizabeth katherine jennifer rebecca victoria "
          "margaret susan deborah abigail alexandra jasmine zoe ruby kayla tayla brianna paige amy holly isabelle "
          "kate lucy molly stephanie natalie rachel samantha ashley alicia courtney erin jade laura megan annabel "
          "bailey blake mitchell kyle tyler jake jayden aidan brodie callum declan hamish oscar angus henry archie "
          "lily ava ivy scarlett matilda eve leah indiana phoebe layla stella").split()
_NICK = {"thomas": "tom tommy", "william": "bill will billy", "james": "jim jimmy", "daniel": "dan danny",
         "benjamin": "ben benny", "samuel": "sam sammy", "matthew": "matt", "nicholas": "nick nicky",
         "alexander": "alex xander", "michael": "mike mick", "jacob": "jake", "christopher": "chris kit",
         "robert": "bob rob bobby", "edward": "ed ted eddie", "charles": "charlie chuck", "richard": "rick dick",
         "anthony": "tony", "jessica": "jess jessie", "isabella": "bella izzy", "elizabeth": "liz beth betty",
         "katherine": "kate kathy kat", "jennifer": "jen jenny", "rebecca": "becky bec", "victoria": "vicky tori",
         "margaret": "maggie peggy meg", "susan": "sue suzy", "deborah": "deb debbie", "abigail": "abby",
         "alexandra": "alex sandra", "stephanie": "steph", "natalie": "nat", "samantha": "sam sammy",
         "zachary": "zac zach", "patrick": "pat paddy", "joshua": "josh", "harrison": "harry", "lachlan": "lachie",
         "charlotte": "lottie charlie", "amelia": "millie", "isabelle": "belle izzy", "matilda": "tilly",
         "jasmine": "jas", "caitlin": "cait", "hamish": "hamo", "annabel": "annie", "henry": "hank"}
_SURNAME = ("smith jones williams brown wilson taylor johnson white martin anderson thompson nguyen thomas walker "
            "harris lee ryan robinson kelly king davis wright evans roberts green hall wood jackson clarke patel "
            "khan lewis james phillips mitchell turner morris campbell young scott allen hughes murphy cooper ward "
            "baker price bennett gray edwards collins stewart morgan reid bell russell hill watson miller davies "
            "mcdonald o'brien jenkins cook fraser macdonald mackenzie mcintyre dawson tran pham wang chen zhang liu "
            "singh sharma kaur rossi russo ferrari papadopoulos nikolaidis kowalski novak schmidt muller weber "
            "schneider fischer becker hoffmann murray burns lloyd barker ellis graham stevens hamilton kennedy "
            "palmer reynolds mason marshall hunter duncan hayes fletcher butler crawford chapman dixon knight "
            "lambert sutherland mcleod doyle sullivan obrien gallagher quinn byrne maher").split()
_SYL_A = "ash bel car dal el far gil har hol kin lang mar nor pem rad ros sel tal ver whit wes bran cald dun".split()
_SYL_B = "ford ton well by son ley man er ard wick more field worth combe stead hurst ridge dale gate cott".split()
_STREET = ("high main church park victoria george king queen william elizabeth station railway bridge mill "
           "albert charles edward hill river lake ocean beach forest oak elm acacia banksia wattle jacaranda "
           "waratah grevillea boronia kurrajong gum myrtle pine cedar willow laurel hawthorn rose violet "
           "orchard meadow valley springfield fairview sunset prospect regent york cambridge oxford").split()
_TYPES = {"street": "st", "road": "rd", "avenue": "ave", "crescent": "cres", "place": "pl", "circuit": "cct",
          "drive": "dr", "court": "ct", "close": "cl", "parade": "pde", "terrace": "tce", "lane": "ln"}
_PREFIX = {"mount": "mt", "port": "pt", "saint": "st", "north": "nth", "south": "sth", "east": "e", "west": "w",
           "glen": "glen", "upper": "upr", "lower": "lwr"}
_SUFFIX = "vale ville wood field ridge park heights beach creek hill bay grove downs point".split()
_PLACE = "village park estate house lodge gardens cottage manor towers".split()
#: first postcode of each state's range (Australian convention, as in FEBRL)
_STATES = (("nsw", 2000, 2999), ("vic", 3000, 3999), ("qld", 4000, 4999), ("sa", 5000, 5799), ("wa", 6000, 6799),
           ("tas", 7000, 7799), ("nt", 800, 899), ("act", 2600, 2619))
_STATE_W = np.array([0.32, 0.26, 0.2, 0.07, 0.1, 0.02, 0.01, 0.02])
_KEYS = {"q": "wa", "w": "qeas", "e": "wrsd", "r": "etdf", "t": "ryfg", "y": "tugh", "u": "yihj", "i": "uojk",
         "o": "ipkl", "p": "ol", "a": "qwsz", "s": "awedxz", "d": "serfcx", "f": "drtgvc", "g": "ftyhbv",
         "h": "gyujnb", "j": "huikmn", "k": "jiolm", "l": "kop", "z": "asx", "x": "zsdc", "c": "xdfv",
         "v": "cfgb", "b": "vghn", "n": "bhjm", "m": "njk", **{str(d): f"{(d + 9) % 10}{(d + 1) % 10}"
                                                                for d in range(10)}}
_LETTERS, _DIGITS = "abcdefghijklmnopqrstuvwxyz", "0123456789"


@dataclass(frozen=True)
class Corruption:
    """Probabilities of FEBRL-like corruptions of a duplicate (see the module docstring)."""

    missing: float = 0.04
    typo: float = 0.12
    variant: float = 0.10
    swap_names: float = 0.02
    swap_words: float = 0.03
    original_missing: float = 0.02
    address_2_share: float = 0.35

    def __post_init__(self) -> None:
        for name, p in vars(self).items():
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"Corruption.{name} must be a probability in [0, 1] (got {p})")
        if self.missing + self.typo + self.variant > 1.0:
            raise ValueError("Corruption: missing + typo + variant must be at most 1 (one action per field)")


def _zipf(rng: np.random.Generator, n: int, size: int, s: float = 1.0) -> np.ndarray:
    w = 1.0 / (np.arange(1, n + 1) + 2.0) ** s
    return rng.choice(n, size=size, p=w / w.sum())


@lru_cache(maxsize=1)
def _vocab() -> dict[str, object]:
    """The vocabularies (fixed: built from a constant seed, whatever the data seed)."""
    rng = np.random.default_rng(12345)
    tail = [a + b for a in _SYL_A for b in _SYL_B]
    surnames = list(dict.fromkeys(_SURNAME + [t for t in rng.permutation(tail).tolist()]))
    streets = list(dict.fromkeys(_STREET + rng.permutation(tail).tolist()[:300]))
    bases = rng.permutation(list(dict.fromkeys(_STREET + tail))).tolist()
    suburbs, alt = [], []
    prefixes = list(_PREFIX)
    for i, base in enumerate(bases):
        pre = prefixes[i % len(prefixes)] if i % 4 == 0 else None
        suf = _SUFFIX[i % len(_SUFFIX)] if i % 3 == 1 else None
        name = " ".join(x for x in (pre, base, suf) if x)
        suburbs.append(name)
        alt.append(" ".join(x for x in (_PREFIX[pre], base, suf) if x) if pre and _PREFIX[pre] != pre else None)
    state = rng.choice(len(_STATES), size=len(suburbs), p=_STATE_W / _STATE_W.sum())
    postcode = np.array([rng.integers(_STATES[s][1], _STATES[s][2] + 1) for s in state])
    nicks = [_NICK.get(g, "").split() for g in _GIVEN]
    nick = [(n[j] if j < len(n) else None) for n in nicks for j in range(3)]  # [given, 3] flattened
    return {"surnames": surnames, "streets": streets, "suburbs": suburbs, "suburb_alt": alt,
            "suburb_state": np.array([_STATES[s][0] for s in state]), "suburb_postcode": postcode,
            "nick": pl.Series(nick, dtype=pl.String), "nick_count": np.array([len(n) for n in nicks])}


def _originals(rng: np.random.Generator, n: int, c: Corruption) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``n`` original records, and each field's variant (or null where it has none)."""
    v = _vocab()
    g = _zipf(rng, len(_GIVEN), n)
    sub = _zipf(rng, len(v["suburbs"]), n, 0.8)
    st, ty = _zipf(rng, len(v["streets"]), n, 0.9), _zipf(rng, len(_TYPES), n, 1.2)
    types, abbrev = np.array(list(_TYPES)), np.array(list(_TYPES.values()))
    streets = np.array(v["streets"])
    kind = rng.choice(4, size=n, p=[0.5, 0.2, 0.15, 0.15])
    word = np.array(v["streets"])[_zipf(rng, len(v["streets"]), n, 0.5)]
    place = np.array(_PLACE)[rng.integers(0, len(_PLACE), n)]
    unit = rng.integers(1, 60, n).astype(str)
    addr2 = np.where(kind == 0, np.char.add(np.char.add(word, " "), place),
                     np.where(kind == 1, np.char.add("unit ", unit), np.where(kind == 2, np.char.add("flat ", unit),
                                                                              word)))
    days = rng.integers(0, (np.datetime64("2010-01-01") - np.datetime64("1920-01-01")).astype(int), n)
    dob = pl.Series(np.datetime64("1920-01-01") + days.astype("timedelta64[D]")).dt.strftime("%Y%m%d")
    nick_pick = v["nick"].gather(g * 3 + (rng.random(n) * np.maximum(v["nick_count"][g], 1)).astype(int))
    street_no = np.minimum(np.ceil(rng.pareto(1.2, n) * 8), 999).astype(int) + 1
    df = pl.DataFrame({
        "given_name": np.array(_GIVEN)[g], "surname": np.array(v["surnames"])[_zipf(rng, len(v["surnames"]), n)],
        "street_number": street_no.astype(str),
        "address_1": np.char.add(np.char.add(streets[st], " "), types[ty]),
        "address_2": addr2, "suburb": np.array(v["suburbs"])[sub],
        "postcode": np.char.zfill(v["suburb_postcode"][sub].astype(str), 4), "state": v["suburb_state"][sub],
        "date_of_birth": dob, "soc_sec_id": rng.integers(1_000_000, 10_000_000, n).astype(str)})
    alt = pl.DataFrame({
        "given_name": nick_pick,
        "address_1": np.char.add(np.char.add(streets[st], " "), abbrev[ty]),
        "suburb": pl.Series(v["suburb_alt"], dtype=pl.String).gather(sub),
        "date_of_birth": dob.str.slice(0, 4) + dob.str.slice(6, 2) + dob.str.slice(4, 2)})
    alt = alt.with_columns(pl.when(pl.col("date_of_birth") != dob).then(pl.col("date_of_birth")).alias("date_of_birth"))
    gone = rng.random((n, len(FIELDS))) < c.original_missing
    gone[:, FIELDS.index("address_2")] = rng.random(n) >= c.address_2_share
    df = df.with_columns(pl.when(pl.Series(gone[:, j])).then(None).otherwise(pl.col(f)).alias(f)
                         for j, f in enumerate(FIELDS))
    return df, alt


def _typo(values: pl.Series, rng: np.random.Generator, digits: bool) -> pl.Series:
    """One edit of each (non-empty) value: neighbour substitution, deletion, insertion or transposition."""
    n = values.len()
    alphabet = _DIGITS if digits else _LETTERS
    df = pl.DataFrame({"s": values, "u": rng.random(n), "w": rng.random(n), "op": rng.integers(0, 4, n),
                       "ins": np.array(list(alphabet))[rng.integers(0, len(alphabet), n)]})
    s, ln = pl.col("s"), pl.col("s").str.len_chars()
    pos = (pl.col("u") * ln).floor().cast(pl.Int64)
    tpos = (pl.col("u") * (ln - 1)).floor().cast(pl.Int64)
    near = s.str.slice(pos, 1).replace_strict(list(_KEYS), list(_KEYS.values()), default=pl.lit(alphabet))
    pick = near.str.slice((pl.col("w") * near.str.len_chars()).floor().cast(pl.Int64), 1)
    sub = pl.concat_str([s.str.slice(0, pos), pick, s.str.slice(pos + 1)])
    delete = pl.concat_str([s.str.slice(0, pos), s.str.slice(pos + 1)])
    insert = pl.concat_str([s.str.slice(0, pos), pl.col("ins"), s.str.slice(pos)])
    swap = pl.concat_str([s.str.slice(0, tpos), s.str.slice(tpos + 1, 1), s.str.slice(tpos, 1), s.str.slice(tpos + 2)])
    out = df.select(pl.when(pl.col("op") == 0).then(sub).when(pl.col("op") == 1).then(delete)
                    .when(pl.col("op") == 2).then(insert).otherwise(swap).alias("t"), sub.alias("sub"))
    # a substitution must differ: the neighbour of a character never is itself; a transposition of equal
    # characters (or of a one-character value) falls back to the substitution
    t = out.select(pl.when(pl.col("t") == values).then(pl.col("sub")).otherwise(pl.col("t"))).to_series()
    return t.set(t == "", None).alias(values.name)


def _duplicates(rng: np.random.Generator, orig: pl.DataFrame, alt: pl.DataFrame, source: np.ndarray,
                c: Corruption) -> tuple[pl.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """Corrupted copies of ``orig[source]``; the actions per field, and the swaps applied."""
    m = source.shape[0]
    dup = orig[source]
    u = rng.random((m, len(FIELDS)))
    actions = np.zeros((m, len(FIELDS)), dtype=np.int8)
    cols = {}
    for j, f in enumerate(FIELDS):
        col = dup[f]
        present = col.is_not_null().to_numpy()
        act = np.where(u[:, j] < c.missing, 1, np.where(u[:, j] < c.missing + c.typo, 2,
                                                       np.where(u[:, j] < c.missing + c.typo + c.variant, 3, 0)))
        if f in alt.columns:
            variant = alt[f][source]
            ok = present & variant.is_not_null().to_numpy() & (variant != col).fill_null(False).to_numpy()
        else:
            variant, ok = None, np.zeros(m, dtype=bool)
        act = np.where((act == 2) & ~present, 0, np.where((act == 3) & ~ok, 0, act)).astype(np.int8)
        typo_rows = np.flatnonzero(act == 2)
        if typo_rows.size:
            col = col.scatter(typo_rows, _typo(col[typo_rows], rng, f in DIGIT_FIELDS))
        if variant is not None and (act == 3).any():
            col = pl.select(pl.when(pl.Series(act == 3)).then(variant).otherwise(col)).to_series()
        col = col.set(pl.Series(act == 1), None)
        cols[f] = col.alias(f)
        actions[:, j] = act
    words = cols["address_1"].str.split(" ")
    can_swap = (words.list.len() == 2).fill_null(False).to_numpy()
    swap_words = (rng.random(m) < c.swap_words) & can_swap
    swapped = words.list.reverse().list.join(" ")
    cols["address_1"] = pl.select(pl.when(pl.Series(swap_words)).then(swapped)
                                  .otherwise(cols["address_1"])).to_series().alias("address_1")
    swap_names = rng.random(m) < c.swap_names
    sw = pl.Series(swap_names)
    g, s = cols["given_name"], cols["surname"]
    cols["given_name"] = pl.select(pl.when(sw).then(s).otherwise(g)).to_series().alias("given_name")
    cols["surname"] = pl.select(pl.when(sw).then(g).otherwise(s)).to_series().alias("surname")
    return pl.DataFrame([cols[f] for f in FIELDS]), actions, swap_names, swap_words


def generate_people(num_records: int, *, duplicate_share: float = 0.4, max_duplicates: int = 4, seed: int = 0,
                    corruption: Corruption | None = None,
                    return_log: bool = False) -> pl.DataFrame | tuple[pl.DataFrame, pl.DataFrame]:
    """``num_records`` synthetic person records: ``rec_id``, ``entity`` (int64) and the FEBRL fields (strings,
    null where missing). With ``return_log``, also a frame of what was done to each row: one ``Int8`` column per
    field (:data:`ACTIONS` codes; 0 for originals), ``swap_names`` and ``swap_words`` (booleans), ``duplicate``."""
    if num_records < 1:
        raise ValueError(f"num_records must be >= 1 (got {num_records})")
    if not 0.0 <= duplicate_share < 1.0:
        raise ValueError(f"duplicate_share must be in [0, 1) (got {duplicate_share})")
    if max_duplicates < 1:
        raise ValueError(f"max_duplicates must be >= 1 (got {max_duplicates})")
    c = corruption or Corruption()
    rng = np.random.default_rng(seed)
    n_dup = int(round(num_records * duplicate_share))
    n_orig = num_records - n_dup
    if n_dup > n_orig * max_duplicates:
        raise ValueError(f"duplicate_share {duplicate_share} needs more than max_duplicates={max_duplicates} "
                         "duplicates per original")
    # duplicates per duplicated entity: 1..max_duplicates with probability ~ 1/k, until n_dup are placed
    k = np.arange(1, max_duplicates + 1)
    counts = rng.choice(k, size=max(n_dup, 1), p=(1 / k) / (1 / k).sum())
    counts = counts[: int(np.searchsorted(np.cumsum(counts), n_dup)) + 1] if n_dup else counts[:0]
    if counts.size:
        counts[-1] -= int(counts.sum()) - n_dup
    if counts.size > n_orig:  # very high shares: spread the rest over every original
        counts = np.bincount(np.arange(n_dup) % n_orig, minlength=n_orig)
    dup_entities = rng.choice(n_orig, size=counts.size, replace=False)
    source = np.repeat(dup_entities, counts)
    dup_no = np.arange(source.size) - np.repeat(np.cumsum(counts) - counts, counts)
    orig, alt = _originals(rng, n_orig, c)
    dups, actions, swap_names, swap_words = _duplicates(rng, orig, alt, source, c)
    entity = np.concatenate([np.arange(n_orig), source]).astype(np.int64)
    ids = pl.Series(np.concatenate([
        np.char.add(np.char.add("rec-", np.arange(n_orig).astype(str)), "-org"),
        np.char.add(np.char.add(np.char.add("rec-", source.astype(str)), "-dup-"), dup_no.astype(str))]))
    frame = pl.concat([orig, dups]).with_columns(pl.Series("entity", entity), ids.alias("rec_id"))
    frame = frame.select("rec_id", "entity", *FIELDS)
    order = rng.permutation(num_records)
    frame = frame[order]
    if not return_log:
        return frame
    act = np.concatenate([np.zeros((n_orig, len(FIELDS)), np.int8), actions])[order]
    log = pl.DataFrame({f: act[:, j] for j, f in enumerate(FIELDS)}).with_columns(
        pl.Series("swap_names", np.concatenate([np.zeros(n_orig, bool), swap_names])[order]),
        pl.Series("swap_words", np.concatenate([np.zeros(n_orig, bool), swap_words])[order]),
        pl.Series("duplicate", np.arange(num_records)[order] >= n_orig))
    return frame, log


def true_pairs(entity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every pair ``(i, j)``, ``i < j``, of rows with the same entity; sorted by ``(i, j)``."""
    entity = np.asarray(entity)
    order = np.argsort(entity, kind="stable")
    e = entity[order]
    a, b = [], []
    d = 1
    while d < e.shape[0]:
        same = e[:-d] == e[d:]
        if not same.any():
            break
        a.append(order[:-d][same])
        b.append(order[d:][same])
        d += 1
    if not a:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    a, b = np.concatenate(a), np.concatenate(b)
    lo, hi = np.minimum(a, b).astype(np.int64), np.maximum(a, b).astype(np.int64)
    o = np.lexsort((hi, lo))
    return lo[o], hi[o]
