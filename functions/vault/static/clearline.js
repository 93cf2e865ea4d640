/*
 * clearline.js: collect cards on a merchant's page without the merchant ever seeing them,
 * modeled on Stripe.js.
 *
 *   const clearline = Clearline('pk_test_...', { apiUrl });
 *   const card = clearline.elements().create('card');
 *   card.mount('#card-element');
 *   card.on('change', ({ complete, brand, error }) => ...);
 *   const { paymentMethod, error } = await clearline.createPaymentMethod({ type: 'card', card });
 *   const { paymentIntent, error } = await clearline.confirmCardPayment(clientSecret, {
 *     payment_method: { card, billing_details: { name } }, return_url });
 *
 * The card field is an iframe served by the card vault (this script's own origin): the page
 * talks to it only by postMessage, and hears back whether the card is complete, its brand,
 * and the payment method the vault created, never the number.
 */
(function (window, document) {
  'use strict';

  // Filled in by the vault when it serves this file.
  var DEFAULT_API_URL = "__CLEARLINE_API_URL__";
  var SERVED_FROM = "__CLEARLINE_VAULT_URL__";

  // The vault is where this script came from (with its stage prefix, if any).
  var script = document.currentScript;
  var VAULT_URL = (script && script.src
    ? script.src.replace(/\/clearline\.js(?:[?#].*)?$/, '')
    : SERVED_FROM).replace(/\/+$/, '');
  var VAULT_ORIGIN = new URL(VAULT_URL + '/', window.location.href).origin;
  var FRAME_PREFIX = '__clearlineFrame';

  var frameCount = 0;
  var elementsByWindow = [];
  var requestCount = 0;

  function randomId() {
    requestCount += 1;
    var random = window.crypto && window.crypto.getRandomValues
      ? Array.prototype.map.call(window.crypto.getRandomValues(new Uint32Array(2)), function (n) {
        return n.toString(36);
      }).join('')
      : String(Math.random()).slice(2);
    return 'req' + requestCount + '_' + random;
  }

  function appendForm(form, prefix, value) {
    if (value === null || value === undefined) return;
    if (typeof value === 'object') {
      Object.keys(value).forEach(function (name) {
        appendForm(form, prefix + '[' + name + ']', value[name]);
      });
    } else {
      form.append(prefix, String(value));
    }
  }

  function connectionError() {
    return {
      type: 'api_connection_error',
      message: 'Clearline could not be reached: check your connection and try again.'
    };
  }

  function integrationError(message) {
    return Promise.resolve({ error: { type: 'invalid_request_error', message: message } });
  }

  // ---- the card element -------------------------------------------------------------------

  function CardElement(publishableKey, options) {
    this._key = publishableKey;
    this._options = options || {};
    this._handlers = {};
    this._pending = {};
    this._iframe = null;
    this._ready = false;
    this._queue = [];
  }

  CardElement.prototype.mount = function (target) {
    var container = typeof target === 'string' ? document.querySelector(target) : target;
    if (!container) throw new Error('Clearline: no element matches ' + target + ' to mount on.');
    if (this._iframe) throw new Error('Clearline: this card element is already mounted.');
    var name = FRAME_PREFIX + frameCount;
    frameCount += 1;
    var iframe = document.createElement('iframe');
    iframe.name = name;
    iframe.title = name + ' secure card input';
    iframe.src = VAULT_URL + '/card-field?key=' + encodeURIComponent(this._key) +
      '&origin=' + encodeURIComponent(window.location.origin);
    iframe.setAttribute('frameborder', '0');
    iframe.setAttribute('scrolling', 'no');
    iframe.setAttribute('allowtransparency', 'true');
    iframe.style.border = 'none';
    iframe.style.width = '100%';
    iframe.style.height = (this._options.height || 72) + 'px';
    iframe.style.display = 'block';
    iframe.style.overflow = 'hidden';
    container.appendChild(iframe);
    this._iframe = iframe;
    elementsByWindow.push(this);
    return this;
  };

  CardElement.prototype.unmount = function () {
    if (!this._iframe) return this;
    this._iframe.parentNode && this._iframe.parentNode.removeChild(this._iframe);
    this._iframe = null;
    this._ready = false;
    var self = this;
    elementsByWindow = elementsByWindow.filter(function (element) { return element !== self; });
    Object.keys(this._pending).forEach(function (id) {
      self._pending[id]({ error: { type: 'invalid_request_error',
        message: 'The card element was unmounted.' } });
    });
    this._pending = {};
    return this;
  };

  CardElement.prototype.destroy = CardElement.prototype.unmount;

  CardElement.prototype.on = function (event, handler) {
    (this._handlers[event] = this._handlers[event] || []).push(handler);
    return this;
  };

  CardElement.prototype.off = function (event, handler) {
    this._handlers[event] = (this._handlers[event] || []).filter(function (h) {
      return h !== handler;
    });
    return this;
  };

  CardElement.prototype.focus = function () {
    this._send({ type: 'clearline:focus' });
  };

  CardElement.prototype.clear = function () {
    this._send({ type: 'clearline:clear' });
  };

  CardElement.prototype._emit = function (event, payload) {
    (this._handlers[event] || []).forEach(function (handler) { handler(payload); });
  };

  CardElement.prototype._send = function (message) {
    if (!this._iframe) return false;
    if (!this._ready) {
      this._queue.push(message);
      return true;
    }
    // Pinned to the vault's origin: only the card field can read it.
    this._iframe.contentWindow.postMessage(message, VAULT_ORIGIN);
    return true;
  };

  CardElement.prototype._receive = function (data) {
    if (data.type === 'clearline:ready') {
      this._ready = true;
      var queued = this._queue;
      this._queue = [];
      for (var i = 0; i < queued.length; i++) this._send(queued[i]);
      this._emit('ready', { elementType: 'card' });
    } else if (data.type === 'clearline:change') {
      this._emit('change', {
        elementType: 'card',
        complete: Boolean(data.complete),
        empty: Boolean(data.empty),
        brand: data.brand,
        error: data.error || undefined
      });
    } else if (data.type === 'clearline:focus') {
      this._emit('focus', { elementType: 'card' });
    } else if (data.type === 'clearline:result' && this._pending[data.id]) {
      var resolve = this._pending[data.id];
      delete this._pending[data.id];
      resolve(data.paymentMethod ? { paymentMethod: data.paymentMethod } : { error: data.error });
    }
  };

  CardElement.prototype._createPaymentMethod = function (billingDetails, metadata) {
    var self = this;
    return new Promise(function (resolve) {
      var id = randomId();
      self._pending[id] = resolve;
      var sent = self._send({
        type: 'clearline:createPaymentMethod',
        id: id,
        billing_details: billingDetails || undefined,
        metadata: metadata || undefined
      });
      if (!sent) {
        delete self._pending[id];
        resolve({ error: { type: 'invalid_request_error',
          message: 'Mount the card element before creating a payment method.' } });
      }
    });
  };

  window.addEventListener('message', function (event) {
    if (event.origin !== VAULT_ORIGIN) return;
    var data = event.data;
    if (!data || typeof data !== 'object' || typeof data.type !== 'string') return;
    for (var i = 0; i < elementsByWindow.length; i++) {
      var element = elementsByWindow[i];
      if (element._iframe && element._iframe.contentWindow === event.source) {
        element._receive(data);
        return;
      }
    }
  });

  // ---- Clearline ----------------------------------------------------------------------------

  function Clearline(publishableKey, options) {
    if (!(this instanceof Clearline)) return new Clearline(publishableKey, options);
    if (typeof publishableKey !== 'string' || publishableKey.indexOf('pk_') !== 0) {
      throw new Error('Clearline: pass your publishable key (pk_...). Secret keys must never ' +
        'be used in a browser.');
    }
    this._key = publishableKey;
    this._apiUrl = String((options && options.apiUrl) || DEFAULT_API_URL).replace(/\/+$/, '');
    this._card = null;
  }

  Clearline.prototype.elements = function () {
    var clearline = this;
    return {
      create: function (type, options) {
        if (type !== 'card') throw new Error('Clearline: only the "card" element exists.');
        if (clearline._card) throw new Error('Clearline: a card element exists already.');
        clearline._card = new CardElement(clearline._key, options);
        return clearline._card;
      },
      getElement: function (type) {
        return type === 'card' ? clearline._card : null;
      }
    };
  };

  Clearline.prototype.createPaymentMethod = function (data) {
    data = data || {};
    if (data.type && data.type !== 'card') {
      return integrationError('Only card payment methods can be created.');
    }
    if (!(data.card instanceof CardElement)) {
      return integrationError('Pass the mounted card element as `card`.');
    }
    return data.card._createPaymentMethod(data.billing_details, data.metadata);
  };

  function intentId(clientSecret) {
    var at = String(clientSecret || '').indexOf('_secret_');
    return at > 0 ? clientSecret.slice(0, at) : null;
  }

  // Answers as {body, ok}; a network failure as a connection error.
  function request(method, url, form) {
    var init = { method: method, credentials: 'omit', cache: 'no-store' };
    if (form) init.body = form; // form-encoded: a simple request, no CORS preflight
    return fetch(url, init).then(function (response) {
      return response.json().then(function (body) {
        return { ok: response.ok, body: body };
      }, function () {
        return { ok: false, body: { error: { type: 'api_error',
          message: 'Clearline answered ' + response.status + ' without a readable body.' } } };
      });
    }, function () {
      return { ok: false, body: { error: connectionError() } };
    });
  }

  Clearline.prototype.confirmCardPayment = function (clientSecret, data) {
    var clearline = this;
    var id = intentId(clientSecret);
    if (!id) return integrationError('Pass the PaymentIntent client_secret (pi_..._secret_...).');
    data = data || {};
    var method = data.payment_method;
    var paymentMethod;
    if (typeof method === 'string') {
      paymentMethod = Promise.resolve({ paymentMethod: { id: method } });
    } else if (method && method.card instanceof CardElement) {
      paymentMethod = method.card._createPaymentMethod(method.billing_details, method.metadata);
    } else if (method === undefined && this._card) {
      paymentMethod = this._card._createPaymentMethod(undefined, undefined);
    } else {
      return integrationError('Pass payment_method: a pm_ id or {card: cardElement}.');
    }
    return paymentMethod.then(function (created) {
      if (created.error) return { error: created.error };
      var form = new URLSearchParams();
      form.append('key', clearline._key);
      form.append('client_secret', clientSecret);
      form.append('payment_method', created.paymentMethod.id);
      if (data.return_url) form.append('return_url', data.return_url);
      var url = clearline._apiUrl + '/v1/payment_intents/' + encodeURIComponent(id) + '/confirm';
      return request('POST', url, form).then(function (answer) {
        var body = answer.body || {};
        if (!answer.ok || body.error) {
          return { error: body.error || { type: 'api_error', message: 'The payment failed.' } };
        }
        var next = body.next_action;
        if (body.status === 'requires_action' && next && next.type === 'redirect_to_url' &&
            next.redirect_to_url && next.redirect_to_url.url) {
          window.location = next.redirect_to_url.url;
          return new Promise(function () {}); // the page is leaving, as with Stripe.js
        }
        return { paymentIntent: body };
      });
    });
  };

  Clearline.prototype.retrievePaymentIntent = function (clientSecret) {
    var id = intentId(clientSecret);
    if (!id) return integrationError('Pass the PaymentIntent client_secret (pi_..._secret_...).');
    var url = this._apiUrl + '/v1/payment_intents/' + encodeURIComponent(id) +
      '?key=' + encodeURIComponent(this._key) +
      '&client_secret=' + encodeURIComponent(clientSecret);
    return request('GET', url, null).then(function (answer) {
      var body = answer.body || {};
      if (!answer.ok || body.error) {
        return { error: body.error || { type: 'api_error', message: 'Retrieving failed.' } };
      }
      return { paymentIntent: body };
    });
  };

  window.Clearline = Clearline;
})(window, document);
