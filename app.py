"""diffusim Streamlit front end: layout only; state, logic and figures live in sim/."""

import streamlit as st

from sim.app import main

st.set_page_config(page_title="diffusim: global AI adoption", page_icon="🌐", layout="wide",
                   initial_sidebar_state="expanded")
main()
