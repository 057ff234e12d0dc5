// Sign-in (with the second-factor step), sign-up, email verification and password reset.
"use strict";

(function () {
  const { api, el, showError } = window.Parley;
  const byId = (id) => document.getElementById(id);
  const notice = (text) => { const n = byId("notice"); if (n) n.textContent = text; };
  const params = new URLSearchParams(window.location.search);

  // The browser session: the access token goes to /session in a form post, which sets the
  // HttpOnly cookie bound to the same server-side session; the tokens are then dropped.
  function startSession(accessToken) {
    const form = byId("session-form");
    form.elements.access_token.value = accessToken;
    form.submit();
  }

  const signin = byId("signin-form");
  if (signin) {
    let mfaToken = null;
    // A sign-in's answer: the tokens, or the second-factor step.
    const signedIn = (res) => {
      if (res.mfa_required) {
        mfaToken = res.mfa_token;
        signin.hidden = true;
        byId("providers").hidden = true;
        byId("mfa-form").hidden = false;
        byId("mfa-code").focus();
        return;
      }
      startSession(res.access_token);
    };
    signin.addEventListener("submit", async (e) => {
      e.preventDefault();
      showError(null);
      try {
        signedIn(await api("POST", "/api/auth/login/", {
          email: signin.elements.email.value, password: signin.elements.password.value,
        }));
      } catch (err) { showError(err); }
    });

    // Identity providers: each button starts its sign-in, which comes back here with a
    // one-time `code` (or an `error`).
    const returnTo = window.location.origin + "/signin";
    api("GET", "/api/auth/oauth/providers/").then((page) => {
      const list = byId("providers");
      for (const p of page.items) {
        const href = "/api/auth/oauth/" + encodeURIComponent(p.name) + "/authorize/?redirect_uri=" + encodeURIComponent(returnTo);
        list.append(el("li", {}, [el("a", { class: "button", href, text: "Sign in with " + p.name })]));
      }
    }).catch(() => {});
    if (params.get("error")) showError(new Error("The provider sign-in did not succeed (" + params.get("error") + ")."));
    if (params.get("code")) {
      history.replaceState(null, "", "/signin");
      api("POST", "/api/auth/oauth/exchange/", { code: params.get("code") }).then(signedIn).catch(showError);
    }
    byId("mfa-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      showError(null);
      const code = byId("mfa-code").value.trim();
      const body = /^\d{6}$/.test(code) ? { mfa_token: mfaToken, code } : { mfa_token: mfaToken, recovery_code: code };
      try {
        const res = await api("POST", "/api/auth/mfa/verify/", body);
        startSession(res.access_token);
      } catch (err) { showError(err); }
    });
  }

  const signup = byId("signup-form");
  if (signup) {
    signup.addEventListener("submit", async (e) => {
      e.preventDefault();
      showError(null);
      const body = { email: signup.elements.email.value, password: signup.elements.password.value };
      if (signup.elements.display_name.value.trim()) body.display_name = signup.elements.display_name.value.trim();
      try {
        const res = await api("POST", "/api/auth/register/", body);
        if (res && res.access_token) startSession(res.access_token);
        else notice("Check your email: follow its link to go on.");
      } catch (err) { showError(err); }
    });
  }

  const verify = byId("verify-status");
  if (verify) {
    const token = params.get("token") || "";
    api("POST", "/api/auth/verify-email/", { token })
      .then(() => { verify.textContent = "Your email address is verified."; })
      .catch((err) => { verify.textContent = "This link cannot be used."; showError(err); });
  }

  const forgot = byId("forgot-form");
  if (forgot) {
    forgot.addEventListener("submit", async (e) => {
      e.preventDefault();
      showError(null);
      try {
        await api("POST", "/api/auth/password/reset/", { email: forgot.elements.email.value });
        notice("If an account uses this address, a reset link is on its way.");
      } catch (err) { showError(err); }
    });
  }

  const reset = byId("reset-form");
  if (reset) {
    reset.addEventListener("submit", async (e) => {
      e.preventDefault();
      showError(null);
      try {
        await api("POST", "/api/auth/password/reset/confirm/", {
          token: params.get("token") || "", new_password: reset.elements.password.value,
        });
        notice("Your password is changed. Sign in with it.");
      } catch (err) { showError(err); }
    });
  }
})();
