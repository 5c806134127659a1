"""sim/cost: closed forms by hand, discounting by hand, conservation of dollars, H100 sanity."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim.cost.capex import (
    book_value_usd,
    capex_breakdown,
    capex_cash_flows,
    depreciation_schedule,
    residual_value,
)
from sim.cost.finance import (
    H100_LENDER_RESIDUAL,
    HOURS_PER_YEAR,
    FinanceAssumptions,
    Purchase,
    ResidualCurve,
    SoftwareCost,
)
from sim.cost.flows import (
    CATEGORIES,
    PER_YEAR_COLUMNS,
    CashFlow,
    CashFlows,
    combine,
    npv,
    per_year,
    pv_by_category,
)
from sim.cost.levelized import (
    HourlyUsage,
    cost_split_by_card_hours,
    effective_usd_per_card_hour,
    levelized_usd_per_m_tokens,
)
from sim.cost.opex import opex_hourly, software_cash_flows
from sim.cost.tax import after_tax_npv
from sim.cost.total import option_cash_flows

H_YEAR = int(HOURS_PER_YEAR)
NO_RESIDUAL = ResidualCurve(age_years=(0.0,), fraction=(0.0,), source="test: no resale")


def _option(purchases, finance, num_hours, *, it_kw=0.0, prov_kw=0.0, rented=0.0, rent=None,
            unserved=0.0, software=None):
    opex = opex_hourly(purchases, finance, it_power_kw=np.full(num_hours, it_kw),
                       provisioned_kw=np.full(num_hours, prov_kw),
                       rented_card_hours=np.full(num_hours, rented), rent_usd_per_card_hour=rent,
                       unserved_card_hours=np.full(num_hours, unserved), software=software)
    return option_cash_flows(purchases, finance, opex, software)


# (1) closed form ---------------------------------------------------------------------------------

def test_constant_fleet_undiscounted_equals_hand_arithmetic():
    fin = FinanceAssumptions(discount_rate=0.0, server_multiplier=1.5, network_share=0.2,
                             maintenance_fraction_per_year=0.02, electricity_usd_per_kwh=0.10,
                             pue=1.25, colo_usd_per_kw_month=150.0, residual_curve=NO_RESIDUAL)
    buy = [Purchase("h100", count=8, order_time_years=0.0, delivery_time_years=0.0,
                    unit_price_usd=20_000.0)]
    sw = SoftwareCost(porting_engineer_years=2.0, porting_time_years=0.5, ongoing_engineers=1.0,
                      usd_per_engineer_year=250_000.0)
    num_hours = 2 * H_YEAR  # 17,520 h
    cf = _option(buy, fin, num_hours, it_kw=5.0, prov_kw=8.0, rented=3.0, rent=2.5, unserved=1.0,
                 software=sw)
    # card      8 x 20,000                         = 160,000
    # server    160,000 x (1.5 - 1)                =  80,000
    # network   240,000 x 0.2 / 0.8                =  60,000  -> capex 300,000
    # energy    5 kW x 17,520 h x 1.25 x $0.10     =  10,950
    # colo      8 kW x $150/kW-month x 24 months   =  28,800
    # maint     300,000 x 0.02/yr x 2 yr           =  12,000
    # rental    3 card-h/h x 17,520 h x $2.5       = 131,400
    # unserved  1 card-h/h x 17,520 h x $2.5 (rent) = 43,800
    # software  2 eng-yr x 250k + 1 eng x 250k x 2 yr = 1,000,000
    # total                                        = 1,526,950  (no residual, rate 0 -> NPV = total)
    expected = {"capex": 300_000.0, "energy": 10_950.0, "colo": 28_800.0, "maintenance": 12_000.0,
                "software": 1_000_000.0, "rental": 131_400.0, "unserved_penalty": 43_800.0,
                "residual": 0.0}
    got = cf.total_by_category_usd()
    for c in CATEGORIES:
        assert got[c] == pytest.approx(expected[c], rel=1e-12, abs=1e-9), c
    assert cf.total_usd() == pytest.approx(1_526_950.0, rel=1e-12)
    assert npv(cf, 0.0) == pytest.approx(1_526_950.0, rel=1e-12)
    df = per_year(cf, 2.0)
    # year 0: capex 300,000 + porting 500,000 + half of every stream
    y0 = 300_000 + 500_000 + (10_950 + 28_800 + 12_000 + 500_000 + 131_400 + 43_800) / 2
    assert df["total_usd"].tolist() == pytest.approx([y0, 1_526_950.0 - y0], rel=1e-12)


# (2) discounting by hand -------------------------------------------------------------------------

def test_single_payment_discounted_by_hand():
    assert npv([CashFlow(3.0, 1000.0, "capex")], 0.08) == pytest.approx(1000.0 / 1.08 ** 3,
                                                                        rel=1e-14)
    assert npv([CashFlow(0.0, 1000.0, "capex")], 0.08) == 1000.0


def test_purchase_with_deposit_discounted_by_hand():
    fin = FinanceAssumptions(discount_rate=0.08, server_multiplier=1.5, network_share=0.25)
    buy = [Purchase("h100", count=10, order_time_years=0.5, delivery_time_years=1.5,
                    unit_price_usd=10_000.0, deposit_fraction=0.3)]
    # card 100,000; server 50,000; network 150,000 x 0.25/0.75 = 50,000 -> total 200,000
    # deposit 60,000 at 0.5 y, balance 140,000 at 1.5 y
    flows = capex_cash_flows(buy, fin)
    assert flows == [CashFlow(0.5, pytest.approx(60_000.0), "capex"),
                     CashFlow(1.5, pytest.approx(140_000.0), "capex")]
    expected = 60_000.0 / 1.08 ** 0.5 + 140_000.0 / 1.08 ** 1.5
    assert npv(flows, 0.08) == pytest.approx(expected, rel=1e-14)


def test_hourly_stream_is_dated_at_the_start_of_its_hour():
    usd = np.zeros(2 * H_YEAR)
    usd[H_YEAR // 2] = 1000.0  # hour 4,380 starts at t = 0.5 y
    cf = CashFlows.from_hourly({"energy": usd})
    assert npv(cf, 0.08) == pytest.approx(1000.0 / 1.08 ** 0.5, rel=1e-13)


# (3) dollars by category sum to the total --------------------------------------------------------

def test_categories_sum_to_total_and_columns_are_exact():
    fin = FinanceAssumptions()
    buy = [Purchase("h100", 16, 0.0, 0.4, 30_000.0, deposit_fraction=0.2),
           Purchase("h100", 8, 1.3, 1.9, 30_000.0)]
    sw = SoftwareCost(porting_engineer_years=1.5, porting_time_years=0.25, ongoing_engineers=0.5,
                      ongoing_start_years=0.7)
    num_hours = int(2.5 * H_YEAR)
    rng = np.random.default_rng(0)
    opex = opex_hourly(buy, fin, it_power_kw=rng.uniform(10, 30, num_hours),
                       provisioned_kw=np.full(num_hours, 30.6),
                       rented_card_hours=rng.uniform(0, 4, num_hours),
                       rent_usd_per_card_hour=rng.uniform(2, 4, num_hours),
                       unserved_card_hours=rng.uniform(0, 1, num_hours), software=sw)
    cf = option_cash_flows(buy, fin, opex, sw)
    df = per_year(cf, 2.5)
    assert tuple(df.columns) == PER_YEAR_COLUMNS == (
        "year", "capex_usd", "energy_usd", "colo_usd", "maintenance_usd", "software_usd",
        "rental_usd", "unserved_penalty_usd", "residual_usd", "total_usd")
    assert df["year"].tolist() == [0, 1, 2]
    cats = df[[f"{c}_usd" for c in CATEGORIES]]
    np.testing.assert_allclose(cats.sum(axis=1), df["total_usd"], rtol=1e-12)
    assert df["total_usd"].sum() == pytest.approx(cf.total_usd(), rel=1e-12)
    by_cat = cf.total_by_category_usd()
    for c in CATEGORIES:
        assert df[f"{c}_usd"].sum() == pytest.approx(by_cat[c], rel=1e-12, abs=1e-6)
    assert sum(pv_by_category(cf, 0.08).values()) == pytest.approx(npv(cf, 0.08), rel=1e-12)
    assert df["residual_usd"].iloc[-1] < 0 and (df["residual_usd"].iloc[:-1] == 0).all()


# (4) residual value ------------------------------------------------------------------------------

def test_residual_value_is_an_inflow_at_the_horizon_and_lowers_npv():
    fin = FinanceAssumptions()
    buy = [Purchase("h100", 8, 0.0, 0.0, 30_000.0)]
    res = residual_value(buy, 5.0, fin)
    b = capex_breakdown(buy[0], fin)
    # age 5 y -> 0.15 (E6 extrapolated) of card + server (240,000 x 1.65 = 396,000) = 59,400
    assert res == [CashFlow(5.0, pytest.approx(-0.15 * b.resaleable_usd), "residual")]
    assert res[0].usd == pytest.approx(-59_400.0)
    capex = capex_cash_flows(buy, fin)
    assert npv(combine(capex, res), 0.08) == pytest.approx(npv(capex, 0.08) - 59_400.0 / 1.08 ** 5)


def test_late_purchase_is_not_penalised_when_residual_counts():
    fin = FinanceAssumptions()
    late = [Purchase("h100", 8, 4.0, 4.0, 30_000.0)]
    early_1y = [Purchase("h100", 8, 0.0, 0.0, 30_000.0)]
    b = capex_breakdown(late[0], fin)
    late_cf = combine(capex_cash_flows(late, fin), residual_value(late, 5.0, fin))
    # bought at year 4 of 5, it keeps 62.5% of card + server at age 1 (E6 lender view)
    assert -late_cf.total_by_category_usd()["residual"] == pytest.approx(0.625 * b.resaleable_usd)
    assert 0.625 * b.resaleable_usd > 0.5 * b.total_usd  # most of its value
    # time-shift invariance: the late buy costs what a buy at t = 0 with a 1-year horizon costs,
    # discounted 4 years; without the residual it would carry its whole price for one year's use
    early_cf = combine(capex_cash_flows(early_1y, fin), residual_value(early_1y, 1.0, fin))
    assert npv(late_cf, 0.08) == pytest.approx(npv(early_cf, 0.08) / 1.08 ** 4, rel=1e-12)
    no_res = npv(capex_cash_flows(late, fin), 0.08)
    assert npv(late_cf, 0.08) < 0.55 * no_res


def test_order_in_transit_at_the_horizon_is_valued_at_its_deposit():
    fin = FinanceAssumptions()
    buy = [Purchase("b200", 8, 4.5, 5.5, 35_000.0, deposit_fraction=0.25)]
    total = capex_breakdown(buy[0], fin).total_usd
    capex = capex_cash_flows(buy, fin, horizon_years=5.0)
    assert capex == [CashFlow(4.5, pytest.approx(0.25 * total), "capex")]  # balance after horizon
    assert residual_value(buy, 5.0, fin) == [CashFlow(5.0, pytest.approx(-0.25 * total),
                                                      "residual")]
    assert residual_value([Purchase("b200", 8, 5.5, 6.0, 35_000.0)], 5.0, fin) == []


def test_residual_curve_interpolates_and_floors():
    c = H100_LENDER_RESIDUAL
    assert c.fraction_at(0.0) == 1.0
    assert c.fraction_at(1.5) == pytest.approx((0.625 + 0.425) / 2)
    assert c.fraction_at(3.0) == pytest.approx(0.30)
    assert c.fraction_at(10.0) == pytest.approx(0.10)  # floor


# (5) depreciation never changes cash or the pre-tax NPV ----------------------------------------

def test_depreciation_never_changes_pre_tax_npv():
    buy = [Purchase("h100", 8, 0.0, 0.25, 30_000.0), Purchase("h100", 8, 1.0, 1.5, 28_000.0)]
    views = []
    for life in (3.0, 5.0, 7.0):
        fin = FinanceAssumptions(depreciation_years=life)
        cf = _option(buy, fin, 4 * H_YEAR, it_kw=15.0, prov_kw=20.4)
        views.append((npv(cf, fin.discount_rate), per_year(cf, 4.0),
                      after_tax_npv(cf, buy, fin, 4.0).after_tax_npv_usd))
    for pv, df, _ in views[1:]:
        assert pv == views[0][0]
        assert df.equals(views[0][1])
    # the after-tax view does move: a shorter life brings the shield earlier (3 y < 5 y < 7 y)
    assert views[0][2] < views[1][2] < views[2][2]


def test_depreciation_schedule_straight_line():
    fin = FinanceAssumptions(depreciation_years=4.0)
    buy = [Purchase("h100", 8, 0.0, 0.5, 30_000.0)]
    c = capex_breakdown(buy[0], fin).total_usd
    df = depreciation_schedule(buy, fin, 5.0)
    assert list(df.columns) == ["year", "depreciation_usd", "book_value_usd"]
    # in service from 0.5 y, C/4 per year until 4.5 y
    np.testing.assert_allclose(df["depreciation_usd"], np.array([0.5, 1, 1, 1, 0.5]) * c / 4)
    np.testing.assert_allclose(df["book_value_usd"], c - np.cumsum(df["depreciation_usd"]),
                               atol=1e-6)
    assert book_value_usd(buy, fin, 5.0) == 0.0


def test_after_tax_at_zero_rate_is_one_minus_tau_of_pre_tax():
    # rate 0, fully depreciated inside the horizon (book value 0 at the end):
    # C + opex - R - tau (opex + C - R) = (1 - tau) x pre-tax
    fin = FinanceAssumptions(discount_rate=0.0, depreciation_years=3.0, tax_rate=0.25)
    buy = [Purchase("h100", 8, 0.0, 0.0, 30_000.0)]
    cf = _option(buy, fin, 5 * H_YEAR, it_kw=7.65, prov_kw=10.2)
    at = after_tax_npv(cf, buy, fin, 5.0)
    assert at.after_tax_npv_usd == pytest.approx(0.75 * npv(cf, 0.0), rel=1e-10)



def test_after_tax_with_a_sale_before_the_horizon_by_hand():
    # A card retired (and sold) at 2 y of a 4-year horizon, depreciated over 5 y: the shield
    # stops at the sale and the tax on the gain over book value falls at the sale, not at 4 y.
    fin = FinanceAssumptions(discount_rate=0.1, depreciation_years=5.0, tax_rate=0.25,
                             maintenance_fraction_per_year=0.0)
    buy = [Purchase("h100", 8, 0.0, 0.0, 30_000.0, retire_time_years=2.0)]
    c = capex_breakdown(buy[0], fin)
    cf = _option(buy, fin, 4 * H_YEAR)
    at = after_tax_npv(cf, buy, fin, 4.0)
    r, tau = 0.1, 0.25
    resale = fin.residual_curve.fraction_at(2.0) * c.resaleable_usd
    book = c.total_usd * (1 - 2.0 / 5.0)
    assert at.residual_gain_tax_pv_usd == pytest.approx(tau * (resale - book) / (1 + r) ** 2,
                                                        rel=1e-12)
    # straight line C/5 a year for 2 years, hour by hour, discounted at the start of each hour
    t = np.arange(2 * H_YEAR) / H_YEAR
    shield = -tau * (c.total_usd / 5 / H_YEAR * (1 + r) ** -t).sum()
    assert at.depreciation_shield_pv_usd == pytest.approx(shield, rel=1e-9)
    assert at.pre_tax_npv_usd == pytest.approx(npv(cf, r), rel=1e-12)


# (6) sanity: an owned, fully used H100 against the neocloud rental band -------------------------

def test_owned_h100_effective_cost_lands_in_the_neocloud_band():
    # A3: H100 SXM card $25-30k [A]; E4: x1.65 whole server / GPU [A], network 15% of cluster (F);
    # E4: DGX H100 10.2 kW per 8 GPUs provisioned, 75% of it drawn [A]; E1/F: $0.081/kWh;
    # E2: PUE 1.3 (new facilities); E3: $184/kW-month; E5/F: 5-year life; E6 residual; 8% rate.
    fin = FinanceAssumptions(discount_rate=0.08, pue=1.3, electricity_usd_per_kwh=0.081,
                             colo_usd_per_kw_month=184.0, server_multiplier=1.65,
                             network_share=0.15, depreciation_years=5.0)
    buy = [Purchase("h100", 8, 0.0, 0.0, 30_000.0)]
    num_hours = 5 * H_YEAR
    cf = _option(buy, fin, num_hours, it_kw=0.75 * 10.2, prov_kw=10.2)
    used = np.full(num_hours, 8.0)  # fully used
    usd_per_h = effective_usd_per_card_hour(cf, used, 0.08)
    pv_hours = float(used @ (1.08 ** -(np.arange(num_hours) / HOURS_PER_YEAR)))
    parts = {c: v / pv_hours for c, v in pv_by_category(cf, 0.08).items() if v != 0}
    undiscounted = effective_usd_per_card_hour(cf, used, 0.0)
    msg = (f"owned H100 ${usd_per_h:.3f}/card-hour at 8% (undiscounted ${undiscounted:.3f}); "
           "by category $/card-hour: " + ", ".join(f"{c} {v:+.3f}" for c, v in parts.items()))
    print(msg)
    assert sum(parts.values()) == pytest.approx(usd_per_h, rel=1e-12)
    assert 1.7 <= usd_per_h <= 3.0, msg  # A4/E6 neocloud H100 band


# (7) levelized $ per million tokens --------------------------------------------------------------

def test_levelized_cost_per_million_tokens_by_hand():
    rate = 0.10
    num_hours = H_YEAR + 1  # hours 0 (t = 0) and 8,760 (t = 1 y)
    cf = [CashFlow(0.0, 1000.0, "capex"), CashFlow(1.0, 1100.0, "energy")]

    def at(a0, a1):
        x = np.zeros(num_hours)
        x[0], x[-1] = a0, a1
        return x

    usage = HourlyUsage(tokens_in=at(0.5e6, 1.1e6), tokens_out=at(0.5e6, 0.55e6),
                        prefill_gpu_hours=at(1.0, 1.1), decode_gpu_hours=at(3.0, 3.3),
                        serving_card_hours=at(3.0, 3.3), training_card_hours=at(1.0, 1.1))
    lc = levelized_usd_per_m_tokens(cf, usage, rate)
    # PV cost 1000 + 1100/1.1 = 2000; PV serving card-h 3 + 3 = 6, training 1 + 1 = 2 -> 3/4 serving
    # serving 1500; PV prefill 2, decode 6 -> input 1/4: 375, output 1125
    # PV tokens in 0.5e6 + 1.0e6 = 1.5e6, out 0.5e6 + 0.5e6 = 1.0e6
    assert lc.pv_cost_usd == pytest.approx(2000.0)
    assert lc.serving_pv_usd == pytest.approx(1500.0) and lc.training_pv_usd == pytest.approx(500.0)
    assert lc.input_pv_usd == pytest.approx(375.0) and lc.output_pv_usd == pytest.approx(1125.0)
    assert lc.usd_per_m_input_tokens == pytest.approx(375.0 / 1.5)  # $250 per M input tokens
    assert lc.usd_per_m_output_tokens == pytest.approx(1125.0 / 1.0)  # $1,125 per M output
    assert lc.usd_per_m_tokens == pytest.approx(1500.0 / 2.5)  # blended $600 per M
    # input/output split proportional to prefill/decode GPU time
    assert lc.input_pv_usd / lc.output_pv_usd == pytest.approx(1.0 / 3.0)
    split = cost_split_by_card_hours(cf, {"serving": usage.serving_card_hours,
                                          "training-run": usage.training_card_hours}, rate)
    assert split == {"serving": pytest.approx(1500.0), "training-run": pytest.approx(500.0)}


# (8) property: a cheaper card never costs more ---------------------------------------------------

@given(price_hi=st.floats(1_000.0, 60_000.0), cut=st.floats(0.0, 1.0),
       count=st.integers(1, 64), order=st.floats(0.0, 2.5), lead=st.floats(0.0, 1.5),
       deposit=st.floats(0.0, 1.0), rate=st.floats(0.0, 0.3), decline=st.floats(0.0, 0.4),
       horizon_h=st.integers(1, 3 * H_YEAR))
def test_cheaper_card_never_raises_total_or_npv(price_hi, cut, count, order, lead, deposit, rate,
                                                  decline, horizon_h):
    fin = FinanceAssumptions(discount_rate=rate, price_decline_per_year=decline)
    results = []
    for price in (price_hi * (1.0 - cut), price_hi):
        buy = [Purchase("h100", count, order, order + lead, price, deposit_fraction=deposit)]
        cf = _option(buy, fin, horizon_h, it_kw=count * 0.95, prov_kw=count * 1.275)
        results.append((cf.total_usd(), npv(cf, rate)))
    (tot_lo, pv_lo), (tot_hi, pv_hi) = results
    assert tot_lo <= tot_hi + 1e-9 * abs(tot_hi)
    assert pv_lo <= pv_hi + 1e-9 * abs(pv_hi)


# inputs and errors -------------------------------------------------------------------------------

def test_unserved_demand_priced_at_rent_or_penalty():
    buy = [Purchase("h100", 8, 0.0, 0.0, 30_000.0)]
    n = 10
    kw = {"it_power_kw": np.zeros(n), "provisioned_kw": np.zeros(n),
          "unserved_card_hours": np.ones(n)}
    assert opex_hourly(buy, FinanceAssumptions(), rent_usd_per_card_hour=2.0,
                       **kw).unserved_penalty_usd.sum() == pytest.approx(20.0)
    assert opex_hourly(buy, FinanceAssumptions(unserved_penalty_usd_per_card_hour=7.0),
                       rent_usd_per_card_hour=2.0, **kw).unserved_penalty_usd.sum() == 70.0
    with pytest.raises(ValueError, match="unserved_card_hours is nonzero but has no price"):
        opex_hourly(buy, FinanceAssumptions(), **kw)


def test_price_decline_and_explicit_server_bill():
    fin = FinanceAssumptions(price_decline_per_year=0.2, network_share=0.0)
    b = capex_breakdown(Purchase("h100", 2, 2.0, 2.5, 10_000.0), fin)
    assert b.card_usd == pytest.approx(2 * 10_000.0 * 0.8 ** 2)
    b = capex_breakdown(Purchase("h100", 2, 0.0, 0.0, 10_000.0,
                                 non_gpu_server_usd_per_card=4_000.0), fin)
    assert (b.card_usd, b.server_usd, b.network_usd) == (20_000.0, 8_000.0, 0.0)


def test_maintenance_and_ongoing_software_start_mid_hour():
    fin = FinanceAssumptions(maintenance_fraction_per_year=HOURS_PER_YEAR / 1e6,
                             server_multiplier=1.0, network_share=0.0)
    # capex 1e6 -> 1 $/h of maintenance from delivery at hour 2.5
    buy = [Purchase("x", 1, 0.0, 2.5 / HOURS_PER_YEAR, 1e6)]
    sw = SoftwareCost(ongoing_engineers=1.0, ongoing_start_years=1.0 / HOURS_PER_YEAR,
                      usd_per_engineer_year=HOURS_PER_YEAR)  # 1 $/h from hour 1
    o = opex_hourly(buy, fin, it_power_kw=np.zeros(5), provisioned_kw=np.zeros(5), software=sw)
    np.testing.assert_allclose(o.maintenance_usd, [0, 0, 0.5, 1, 1])
    np.testing.assert_allclose(o.software_usd, [0, 1, 1, 1, 1])


@pytest.mark.parametrize("make, match", [
    (lambda: Purchase("h100", 0, 0.0, 0.0, 1.0), r"count must be a positive integer"),
    (lambda: Purchase("h100", 8, 1.0, 0.5, 1.0),
     r"delivery_time_years must be >= order_time_years"),
    (lambda: Purchase("h100", 8, 0.0, 0.0, -5.0), r"unit_price_usd must be >= 0"),
    (lambda: FinanceAssumptions(depreciation_years=0.0), r"depreciation_years must be > 0"),
    (lambda: FinanceAssumptions(pue=0.9), r"pue must be >= 1"),
    (lambda: FinanceAssumptions(discount_rate=math.nan), r"discount_rate must be a finite number"),
    (lambda: ResidualCurve((0.0, 1.0), (1.0, 1.2), "x"), r"fraction\[1\] must be in \[0, 1\]"),
    (lambda: CashFlows.from_list([(0.0, 1.0, "depreciation")]), r"unknown cash-flow category"),
    (lambda: software_cash_flows(SoftwareCost(porting_engineer_years=1.0, porting_time_years=6.0),
                                 5.0), r"after the horizon"),
])
def test_bad_inputs_give_one_line_errors(make, match):
    with pytest.raises(ValueError, match=match) as e:
        make()
    assert "\n" not in str(e.value)


def test_per_year_rejects_flows_outside_the_horizon():
    with pytest.raises(ValueError, match="outside the horizon"):
        per_year([CashFlow(5.5, 1.0, "capex")], 5.0)
